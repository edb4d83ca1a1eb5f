"""Graph authoring, compile-time validation, topological order, exports and hash."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import DagSpec, build_dag, dag_with_shuffled_insertion, dags

from weavegraph import (
    END,
    START,
    ConfigError,
    Graph,
    GraphBuilder,
    GraphError,
    NodeContext,
    RetryPolicy,
    RuntimeConfig,
    StateSnapshot,
    VersionedState,
    WeavegraphError,
    add_messages,
    reducers,
)
from weavegraph._core.frontier import start_frontier
from weavegraph.errors import (
    CycleError,
    DuplicateEdgeError,
    DuplicateNodeError,
    EdgeFromEndError,
    InvalidEdgeError,
    InvalidNodeError,
    InvalidReducerError,
    InvalidRouterError,
    MissingEntryError,
    NoPathToEndError,
    ReservedNodeNameError,
    UnknownNodeError,
    UnreachableNodesError,
)


async def node_a(snapshot: StateSnapshot, ctx: NodeContext) -> None:
    """A valid node body."""


async def node_b(snapshot: StateSnapshot, ctx: NodeContext) -> None:
    """Another valid node body (a different label for hashing)."""


def sync_node(snapshot: StateSnapshot, ctx: NodeContext) -> None:
    """Not async: rejected."""


def router_end(snapshot: StateSnapshot) -> str:
    return END


def router_other(snapshot: StateSnapshot) -> str:
    return END


def keep_last(current: Any, update: Any) -> Any:
    """A custom messages reducer (only its identity matters here)."""
    return list(current)[-1:]


class GoodNode:
    async def run(self, snapshot: StateSnapshot, ctx: NodeContext) -> None:
        return None


class SyncRunNode:
    def run(self, snapshot: StateSnapshot, ctx: NodeContext) -> None:
        return None


class AsyncCallable:
    async def __call__(self, snapshot: StateSnapshot, ctx: NodeContext) -> None:
        return None


class SyncCallable:
    def __call__(self, snapshot: StateSnapshot, ctx: NodeContext) -> None:
        return None


def builder(*names: str) -> GraphBuilder:
    b = GraphBuilder()
    for name in names:
        b.add_node(name, node_a)
    return b


def chain(*names: str) -> GraphBuilder:
    """START -> names... -> END."""
    b = builder(*names)
    path = [START, *names, END]
    for src, dst in itertools.pairwise(path):
        b.add_edge(src, dst)
    return b


def compiled(b: GraphBuilder) -> Graph:
    return b.compile().graph


# ------------------------------------------------------------- node registration


class TestAddNode:
    @pytest.mark.parametrize(("name", "label"), [(START, "START"), (END, "END")])
    def test_virtual_names_are_reserved(self, name: str, label: str) -> None:
        with pytest.raises(ReservedNodeNameError, match=label):
            GraphBuilder().add_node(name, node_a)

    def test_reserved_is_a_graph_error(self) -> None:
        with pytest.raises(GraphError):
            GraphBuilder().add_node(START, node_a)

    def test_duplicate_node(self) -> None:
        b = builder("worker")
        with pytest.raises(DuplicateNodeError, match="'worker'"):
            b.add_node("worker", node_b)

    @pytest.mark.parametrize("name", ["", 3, None, ("a",)])
    def test_bad_names(self, name: Any) -> None:
        with pytest.raises(InvalidNodeError):
            GraphBuilder().add_node(name, node_a)

    def test_sync_function_rejected(self) -> None:
        with pytest.raises(InvalidNodeError, match=r"'worker'.*async def"):
            GraphBuilder().add_node("worker", sync_node)

    def test_sync_lambda_rejected(self) -> None:
        with pytest.raises(InvalidNodeError, match="'w'"):
            GraphBuilder().add_node("w", lambda snapshot, ctx: None)

    @pytest.mark.parametrize("obj", [42, "text", None, object()])
    def test_non_callables_rejected(self, obj: object) -> None:
        with pytest.raises(InvalidNodeError, match="'worker'"):
            GraphBuilder().add_node("worker", obj)  # type: ignore[arg-type]

    def test_object_with_sync_run_rejected(self) -> None:
        with pytest.raises(InvalidNodeError, match=r"'worker'.*SyncRunNode\.run"):
            GraphBuilder().add_node("worker", SyncRunNode())  # type: ignore[arg-type]

    def test_sync_callable_object_rejected(self) -> None:
        with pytest.raises(InvalidNodeError, match="'worker'"):
            GraphBuilder().add_node("worker", SyncCallable())  # type: ignore[arg-type]

    def test_node_class_instead_of_instance_rejected(self) -> None:
        # The class' ``run`` is an unbound function that needs ``self``: calling it
        # as ``run(snapshot, ctx)`` can never work, so registration must fail.
        with pytest.raises(InvalidNodeError, match="'worker'"):
            GraphBuilder().add_node("worker", GoodNode)  # type: ignore[arg-type]

    def test_accepted_node_kinds(self) -> None:
        b = (
            GraphBuilder()
            .add_node("fn", node_a)
            .add_node("obj", GoodNode())
            .add_node("callable", AsyncCallable())
        )
        for name in ("fn", "obj", "callable"):
            b.add_edge(START, name).add_edge(name, END)
        graph = compiled(b)
        assert set(graph.nodes) == {"fn", "obj", "callable"}
        assert graph.nodes["fn"].body is node_a
        assert graph.nodes["fn"].label.endswith("node_a")
        assert graph.nodes["obj"].label.endswith("GoodNode")

    @pytest.mark.parametrize(
        "timeout", [0, -1, -0.5, "5", True, float("nan"), [1.0]], ids=repr
    )
    def test_bad_timeout(self, timeout: Any) -> None:
        with pytest.raises(InvalidNodeError, match=r"'worker'.*timeout"):
            GraphBuilder().add_node("worker", node_a, timeout=timeout)

    def test_good_timeout_and_retry_are_kept(self) -> None:
        policy = RetryPolicy(max_attempts=2, backoff=0.5)
        b = GraphBuilder().add_node("w", node_a, timeout=2, retry=policy)
        graph = compiled(b.add_edge(START, "w").add_edge("w", END))
        assert graph.nodes["w"].timeout == 2.0
        assert isinstance(graph.nodes["w"].timeout, float)
        assert graph.nodes["w"].retry is policy

    def test_bad_retry(self) -> None:
        with pytest.raises(InvalidNodeError, match=r"'w'.*RetryPolicy"):
            GraphBuilder().add_node("w", node_a, retry=3)  # type: ignore[arg-type]

    def test_destinations_as_a_single_string_rejected(self) -> None:
        # Like Replace('node'), a bare string must not be split into letters.
        with pytest.raises(GraphError, match="worker"):
            GraphBuilder().add_node("boss", node_a, destinations="worker")

    def test_bad_destination(self) -> None:
        with pytest.raises(InvalidEdgeError):
            GraphBuilder().add_node("boss", node_a, destinations=[""])

    def test_builder_methods_chain(self) -> None:
        b = GraphBuilder()
        assert b.add_node("a", node_a) is b
        assert b.add_edge(START, "a") is b
        assert b.add_conditional_edge("a", router_end, [END]) is b
        assert b.with_reducer("messages", add_messages) is b
        assert b.with_key_reducer("facts", "append") is b

    def test_nodes_are_gated_by_default(self) -> None:
        b = GraphBuilder().add_node("a", node_a).add_node("poll", node_a, gated=False)
        b.add_edge(START, "a").add_edge(START, "poll")
        b.add_edge("a", END).add_edge("poll", END)
        graph = compiled(b)
        assert graph.nodes["a"].gated is True
        assert graph.nodes["poll"].gated is False
        assert graph.ungated == frozenset({"poll"})

    @pytest.mark.parametrize("gated", [0, 1, "no", None], ids=repr)
    def test_gated_must_be_a_bool(self, gated: Any) -> None:
        with pytest.raises(InvalidNodeError, match=r"'poll'.*gated"):
            GraphBuilder().add_node("poll", node_a, gated=gated)


class TestRetryPolicy:
    def test_delay_grows_and_is_capped(self) -> None:
        policy = RetryPolicy(max_attempts=5, backoff=1.0, multiplier=2.0, max_backoff=3)
        assert [policy.delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 3.0, 3.0]

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"max_attempts": 0},
            {"max_attempts": 1.5},
            {"backoff": -1},
            {"multiplier": "x"},
        ],
    )
    def test_invalid(self, kwargs: dict[str, Any]) -> None:
        with pytest.raises(ValueError):
            RetryPolicy(**kwargs)


# ------------------------------------------------------------------------ edges


class TestAddEdge:
    def test_edge_from_end(self) -> None:
        with pytest.raises(EdgeFromEndError, match=r"END -> a"):
            builder("a").add_edge(END, "a")

    def test_join_containing_end(self) -> None:
        with pytest.raises(EdgeFromEndError):
            builder("a", "b").add_edge(["a", END], "b")

    def test_conditional_edge_from_end(self) -> None:
        with pytest.raises(EdgeFromEndError):
            builder("a").add_conditional_edge(END, router_end)

    def test_edge_into_start(self) -> None:
        with pytest.raises(InvalidEdgeError, match="START"):
            builder("a").add_edge("a", START)

    @pytest.mark.parametrize(
        ("source", "target"),
        [("", "a"), ("a", ""), (1, "a"), ("a", None), (None, "a"), (["a", 2], "b")],
        ids=repr,
    )
    def test_malformed_endpoints(self, source: Any, target: Any) -> None:
        with pytest.raises(InvalidEdgeError):
            builder("a", "b").add_edge(source, target)

    def test_empty_join(self) -> None:
        with pytest.raises(InvalidEdgeError, match="at least one"):
            builder("a").add_edge([], "a")

    def test_start_in_join(self) -> None:
        with pytest.raises(InvalidEdgeError, match="START"):
            builder("a", "b").add_edge([START, "a"], "b")

    def test_repeated_join_source(self) -> None:
        with pytest.raises(InvalidEdgeError, match="'a'"):
            builder("a", "b").add_edge(["a", "a"], "b")

    def test_duplicate_plain_edge(self) -> None:
        b = builder("a").add_edge(START, "a")
        with pytest.raises(DuplicateEdgeError, match=r"START -> a"):
            b.add_edge(START, "a")

    def test_duplicate_start_end(self) -> None:
        b = GraphBuilder().add_edge(START, END)
        with pytest.raises(DuplicateEdgeError, match=r"START -> END"):
            b.add_edge(START, END)

    def test_plain_edge_then_join_over_it(self) -> None:
        b = builder("a", "b", "c").add_edge("a", "c")
        with pytest.raises(DuplicateEdgeError, match=r"a -> c"):
            b.add_edge(["a", "b"], "c")

    def test_join_then_plain_edge_inside_it(self) -> None:
        b = builder("a", "b", "c").add_edge(["a", "b"], "c")
        with pytest.raises(DuplicateEdgeError, match=r"b -> c"):
            b.add_edge("b", "c")

    def test_overlapping_joins(self) -> None:
        b = builder("a", "b", "x", "c").add_edge(["a", "b"], "c")
        with pytest.raises(DuplicateEdgeError, match=r"'b'.*'x'.*c.*overlaps.*'a'"):
            b.add_edge(["b", "x"], "c")

    def test_same_join_twice(self) -> None:
        b = builder("a", "b", "c").add_edge(["a", "b"], "c")
        with pytest.raises(DuplicateEdgeError):
            b.add_edge(["b", "a"], "c")

    def test_disjoint_joins_on_one_target_allowed(self) -> None:
        b = chain("a", "b", "x", "y").add_node("c", node_a).add_edge("c", END)
        b.add_edge(["a", "b"], "c").add_edge(["x", "y"], "c")
        graph = compiled(b)
        assert [j.sources for j in graph.joins] == [("a", "b"), ("x", "y")]

    def test_single_element_join_is_a_plain_edge(self) -> None:
        graph = compiled(builder("a").add_edge([START], "a").add_edge("a", END))
        assert graph.edges[START] == ("a",)
        assert graph.joins == ()

    def test_join_sources_from_any_iterable(self) -> None:
        b = chain("a", "b").add_node("c", node_a).add_edge("c", END)
        graph = compiled(b.add_edge(iter(["a", "b"]), "c"))
        assert graph.joins[0].sources == ("a", "b")
        assert graph.joins[0].target == "c"


class TestConditionalEdge:
    def test_async_router_rejected(self) -> None:
        async def router(snapshot: StateSnapshot) -> str:
            return END

        with pytest.raises(InvalidRouterError, match=r"'a'.*async"):
            builder("a").add_conditional_edge("a", router)

    def test_async_callable_router_object_rejected(self) -> None:
        class Router:
            async def __call__(self, snapshot: StateSnapshot) -> str:
                return END

        with pytest.raises(InvalidRouterError, match="'a'"):
            builder("a").add_conditional_edge("a", Router())

    @pytest.mark.parametrize("router", [None, "a", 3])
    def test_non_callable_router(self, router: Any) -> None:
        with pytest.raises(InvalidRouterError, match="'a'"):
            builder("a").add_conditional_edge("a", router)

    @pytest.mark.parametrize("path_map", ["a", 5, object()], ids=repr)
    def test_path_map_of_wrong_type(self, path_map: Any) -> None:
        with pytest.raises(InvalidRouterError, match="path_map"):
            builder("a").add_conditional_edge("a", router_end, path_map)

    @pytest.mark.parametrize("path_map", [{"x": 1}, ["a", ""]], ids=repr)
    def test_path_map_with_bad_targets(self, path_map: Any) -> None:
        # The docstring promises InvalidRouterError for a malformed path_map.
        with pytest.raises(InvalidRouterError, match="path_map"):
            builder("a").add_conditional_edge("a", router_end, path_map)

    def test_path_map_list_declares_identity_mapping(self) -> None:
        b = chain("a", "b").add_conditional_edge("a", router_end, ["b", END])
        (cond,) = compiled(b).conditionals
        assert dict(cond.path_map or {}) == {"b": "b", END: END}
        assert cond.declared_targets() == ("b", END)

    def test_path_map_dict_is_copied_and_read_only(self) -> None:
        mapping = {"yes": "b", "no": END, "again": "b"}
        b = chain("a", "b").add_conditional_edge("a", router_end, mapping)
        mapping["later"] = "a"
        (cond,) = compiled(b).conditionals
        assert "later" not in (cond.path_map or {})
        assert cond.declared_targets() == ("b", END)
        with pytest.raises(TypeError):
            cond.path_map["x"] = "a"  # type: ignore[index]

    def test_router_without_path_map_declares_nothing(self) -> None:
        b = chain("a").add_conditional_edge("a", router_end)
        (cond,) = compiled(b).conditionals
        assert cond.declared_targets() is None


class TestReducerRegistration:
    @pytest.mark.parametrize("channel", ["versions", "message", "", "Messages"])
    def test_unknown_channel(self, channel: str) -> None:
        with pytest.raises(InvalidReducerError, match="channel"):
            GraphBuilder().with_reducer(channel, add_messages)

    def test_non_callable(self) -> None:
        with pytest.raises(InvalidReducerError, match="'messages'"):
            GraphBuilder().with_reducer("messages", "add")  # type: ignore[arg-type]

    def test_an_extra_key_as_channel_points_to_key_reducers(self) -> None:
        with pytest.raises(InvalidReducerError, match="with_key_reducer"):
            GraphBuilder().with_reducer("facts", add_messages)


class TestKeyReducerRegistration:
    @pytest.mark.parametrize(
        ("name", "function"),
        [
            ("append", reducers.append),
            ("add", reducers.add),
            ("merge", reducers.merge),
            ("replace", reducers.replace),
        ],
    )
    def test_builtins_by_name(self, name: str, function: Any) -> None:
        b = GraphBuilder().with_key_reducer("k", name).add_edge(START, END)
        assert compiled(b).reducers.by_key == {"k": function}

    def test_custom_function(self) -> None:
        b = GraphBuilder().with_key_reducer("k", keep_last).add_edge(START, END)
        assert compiled(b).reducers.by_key["k"] is keep_last

    def test_unknown_name(self) -> None:
        with pytest.raises(
            InvalidReducerError, match=r"'concat'.*'append', 'add', 'merge', 'replace'"
        ):
            GraphBuilder().with_key_reducer("k", "concat")

    @pytest.mark.parametrize("reducer", [3, None, ["append"]], ids=repr)
    def test_not_callable(self, reducer: Any) -> None:
        with pytest.raises(InvalidReducerError, match=r'extra\["k"\]'):
            GraphBuilder().with_key_reducer("k", reducer)

    @pytest.mark.parametrize("key", ["", 3, None], ids=repr)
    def test_bad_key(self, key: Any) -> None:
        with pytest.raises(InvalidReducerError, match="key"):
            GraphBuilder().with_key_reducer(key, "append")

    def test_one_reducer_per_key(self) -> None:
        b = GraphBuilder().with_key_reducer("k", "append")
        with pytest.raises(InvalidReducerError, match=r'extra\["k"\] already has'):
            b.with_key_reducer("k", "add")
        b.with_key_reducer("other", "add")

    def test_a_graph_error(self) -> None:
        with pytest.raises(GraphError):
            GraphBuilder().with_key_reducer("k", "nope")


# ------------------------------------------------------------------- validation


class TestValidation:
    def test_empty_builder_has_no_entry(self) -> None:
        with pytest.raises(MissingEntryError, match="START"):
            GraphBuilder().compile()

    def test_nodes_without_start_edge(self) -> None:
        with pytest.raises(MissingEntryError):
            builder("a").add_edge("a", END).compile()

    def test_router_from_start_is_an_entry(self) -> None:
        b = builder("a").add_conditional_edge(START, lambda s: "a", ["a"])
        graph = compiled(b.add_edge("a", END))
        assert graph.edges.get(START) is None

    def test_start_to_end_only_compiles(self) -> None:
        graph = compiled(GraphBuilder().add_edge(START, END))
        assert dict(graph.nodes) == {}
        assert graph.topological_order() == [START, END]
        assert graph.edge_list() == [(START, END)]
        assert start_frontier(graph, VersionedState().snapshot()).frontier == (END,)

    def test_compile_rejects_non_config(self) -> None:
        with pytest.raises(ConfigError, match="RuntimeConfig"):
            chain("a").compile(config="fast")  # type: ignore[arg-type]

    def test_compile_keeps_config(self) -> None:
        config = RuntimeConfig(max_steps=7)
        assert chain("a").compile(config).config is config

    def test_graph_validate_can_be_rerun(self) -> None:
        graph = compiled(chain("a", "b"))
        graph.validate()

    # -- unknown nodes

    def test_unknown_edge_target(self) -> None:
        b = builder("a").add_edge(START, "a").add_edge("a", "ghost")
        with pytest.raises(UnknownNodeError, match=r"a -> ghost.*'ghost'"):
            b.compile()

    def test_unknown_edge_source(self) -> None:
        b = chain("a").add_edge("ghost", "a")
        with pytest.raises(UnknownNodeError, match="'ghost'"):
            b.compile()

    def test_unknown_start_target(self) -> None:
        with pytest.raises(UnknownNodeError, match="'ghost'"):
            GraphBuilder().add_edge(START, "ghost").compile()

    def test_unknown_join_source(self) -> None:
        b = chain("a").add_node("c", node_a).add_edge(["a", "ghost"], "c")
        with pytest.raises(UnknownNodeError, match=r"join.*'ghost'"):
            b.compile()

    def test_unknown_join_target(self) -> None:
        b = chain("a", "b").add_edge(["a", "b"], "ghost")
        with pytest.raises(UnknownNodeError, match="'ghost'"):
            b.compile()

    def test_unknown_path_map_target(self) -> None:
        b = chain("a").add_conditional_edge("a", router_end, {"x": "ghost"})
        with pytest.raises(UnknownNodeError, match=r"path_map.*'a'.*'ghost'"):
            b.compile()

    def test_unknown_conditional_source(self) -> None:
        b = chain("a").add_conditional_edge("ghost", router_end, [END])
        with pytest.raises(UnknownNodeError, match="'ghost'"):
            b.compile()

    def test_unknown_destination(self) -> None:
        b = GraphBuilder().add_node("boss", node_a, destinations=["ghost"])
        b.add_edge(START, "boss").add_edge("boss", END)
        with pytest.raises(UnknownNodeError, match=r"destinations.*'boss'.*'ghost'"):
            b.compile()

    def test_unknown_node_hint_for_case_mismatch(self) -> None:
        b = builder("Worker").add_edge(START, "worker")
        with pytest.raises(UnknownNodeError, match="did you mean 'Worker'"):
            b.compile()

    # -- cycles

    def test_self_loop(self) -> None:
        b = chain("a").add_edge("a", "a")
        with pytest.raises(CycleError, match=r"a -> a") as info:
            b.compile()
        assert info.value.cycle == ("a", "a")

    def test_two_cycle(self) -> None:
        b = chain("a", "b").add_edge("b", "a")
        with pytest.raises(CycleError, match=r"cycle detected") as info:
            b.compile()
        cycle = info.value.cycle
        assert cycle[0] == cycle[-1]
        assert set(cycle) == {"a", "b"}
        assert len(cycle) == 3
        assert " -> ".join(cycle) in str(info.value)

    def test_cycle_through_join(self) -> None:
        b = builder("a", "x", "b").add_edge(START, "a").add_edge(START, "x")
        b.add_edge(["a", "x"], "b").add_edge("b", "a").add_edge("b", END)
        with pytest.raises(CycleError) as info:
            b.compile()
        assert set(info.value.cycle) == {"a", "b"}

    def test_longer_cycle_is_reported_as_a_closed_path(self) -> None:
        b = chain("a", "b", "c", "d").add_edge("d", "b")
        with pytest.raises(CycleError) as info:
            b.compile()
        cycle = info.value.cycle
        assert cycle[0] == cycle[-1]
        assert set(cycle) == {"b", "c", "d"}
        pairs = {("a", "b"), ("b", "c"), ("c", "d"), ("d", "b")}
        assert all(pair in pairs for pair in itertools.pairwise(cycle))

    def test_router_loop_is_not_a_cycle(self) -> None:
        b = chain("a").add_conditional_edge("a", lambda s: "a", ["a", END])
        compiled(b)

    # -- reachability

    def test_unreachable_nodes_sorted_and_named(self) -> None:
        b = chain("a").add_node("zed", node_a).add_node("bee", node_a)
        b.add_edge("zed", END).add_edge("bee", END)
        with pytest.raises(UnreachableNodesError, match="bee, zed") as info:
            b.compile()
        assert info.value.nodes == ("bee", "zed")

    def test_no_path_to_end(self) -> None:
        b = chain("a").add_node("sink", node_a).add_edge("a", "sink")
        with pytest.raises(NoPathToEndError, match="sink") as info:
            b.compile()
        assert info.value.nodes == ("sink",)

    def test_no_path_to_end_lists_every_stuck_node(self) -> None:
        b = chain("a").add_node("s2", node_a).add_node("s1", node_a)
        b.add_edge("a", "s1").add_edge("s1", "s2")
        with pytest.raises(NoPathToEndError, match="s1, s2") as info:
            b.compile()
        assert info.value.nodes == ("s1", "s2")

    def test_unreachable_with_router_that_declares_targets(self) -> None:
        b = chain("a").add_node("b", node_a).add_edge("b", END)
        b.add_conditional_edge("a", router_end, [END])
        with pytest.raises(UnreachableNodesError, match="b"):
            b.compile()

    def test_path_map_makes_nodes_reachable(self) -> None:
        b = chain("a").add_node("b", node_a).add_edge("b", END)
        b.add_conditional_edge("a", router_end, {"go": "b", "stop": END})
        compiled(b)

    def test_router_without_path_map_may_reach_anything(self) -> None:
        b = chain("a").add_node("b", node_a).add_edge("b", END)
        b.add_conditional_edge("a", router_end)
        compiled(b)

    def test_no_path_to_end_with_declared_router_targets(self) -> None:
        b = chain("a").add_node("b", node_a)
        b.add_conditional_edge("a", router_end, ["b", END])
        with pytest.raises(NoPathToEndError, match="b"):
            b.compile()

    def test_no_path_to_end_even_behind_an_undeclared_router(self) -> None:
        # ``a`` may route anywhere, so ``b`` is reachable, but ``b`` is stuck.
        b = chain("a").add_node("b", node_a).add_conditional_edge("a", router_end)
        with pytest.raises(NoPathToEndError, match="b"):
            b.compile()

    def test_undeclared_router_may_reach_end(self) -> None:
        b = builder("a").add_edge(START, "a").add_conditional_edge("a", router_end)
        compiled(b)

    def test_router_only_loop_with_declared_exit(self) -> None:
        b = builder("a").add_edge(START, "a")
        b.add_conditional_edge("a", router_end, {"again": "a", "done": END})
        compiled(b)

    def test_destinations_count_for_reachability(self) -> None:
        b = GraphBuilder().add_node("boss", node_a, destinations=["worker", END])
        b.add_node("worker", node_a).add_edge(START, "boss").add_edge("worker", END)
        compiled(b)
        b2 = GraphBuilder().add_node("boss", node_a).add_node("worker", node_a)
        b2.add_edge(START, "boss").add_edge("boss", END).add_edge("worker", END)
        with pytest.raises(UnreachableNodesError, match="worker") as info:
            b2.compile()
        # A node reached only through Replace/Append: the message names the fix.
        assert "add_node(sender, ..., destinations=[...])" in str(info.value)
        assert "add_edge" in str(info.value)
        assert "path_map" in str(info.value)

    def test_join_target_needs_every_source_reachable(self) -> None:
        b = chain("a").add_node("b", node_a).add_node("c", node_a)
        b.add_edge(["a", "b"], "c").add_edge("c", END)
        with pytest.raises(UnreachableNodesError) as info:
            b.compile()
        assert info.value.nodes == ("b", "c")

    def test_join_target_reachable_when_all_sources_are(self) -> None:
        b = chain("a", "b").add_node("c", node_a)
        b.add_edge(["a", "b"], "c").add_edge("c", END)
        compiled(b)

    def test_join_source_reaches_end_through_target(self) -> None:
        b = builder("a", "b", "c").add_edge(START, "a").add_edge(START, "b")
        b.add_edge(["a", "b"], "c").add_edge("c", END)
        compiled(b)

    # -- order of checks

    def test_missing_entry_before_unknown_node(self) -> None:
        b = builder("a").add_edge("a", "ghost")
        with pytest.raises(MissingEntryError):
            b.compile()

    def test_unknown_node_before_cycle(self) -> None:
        b = chain("a", "b").add_edge("b", "a").add_edge("a", "ghost")
        with pytest.raises(UnknownNodeError, match="ghost"):
            b.compile()

    def test_unknown_node_closing_a_cycle(self) -> None:
        b = chain("a").add_edge("a", "ghost").add_edge("ghost", "a")
        with pytest.raises(UnknownNodeError, match="ghost"):
            b.compile()

    def test_cycle_before_unreachable(self) -> None:
        b = chain("a").add_node("x", node_a).add_node("y", node_a)
        b.add_edge("x", "y").add_edge("y", "x")
        with pytest.raises(CycleError):
            b.compile()

    def test_unreachable_before_no_path_to_end(self) -> None:
        b = chain("a").add_node("lonely", node_a).add_node("stuck", node_a)
        b.add_edge("a", "stuck")
        with pytest.raises(UnreachableNodesError, match="lonely"):
            b.compile()

    def test_every_validation_error_is_a_graph_error(self) -> None:
        failing = [
            GraphBuilder(),
            GraphBuilder().add_edge(START, "ghost"),
            chain("a").add_edge("a", "a"),
            chain("a").add_node("b", node_a).add_edge("b", END),
            chain("a").add_node("b", node_a).add_edge("a", "b"),
        ]
        kinds = []
        for b in failing:
            with pytest.raises(GraphError) as info:
                b.compile()
            assert isinstance(info.value, WeavegraphError)
            kinds.append(type(info.value))
        assert kinds == [
            MissingEntryError,
            UnknownNodeError,
            CycleError,
            UnreachableNodesError,
            NoPathToEndError,
        ]


# ------------------------------------------------------------ introspection


class TestIntrospection:
    def test_nodes_and_edges_are_read_only(self) -> None:
        graph = compiled(chain("a", "b"))
        with pytest.raises(TypeError):
            graph.nodes["x"] = graph.nodes["a"]  # type: ignore[index]
        with pytest.raises(TypeError):
            graph.edges["a"] = ()  # type: ignore[index]
        assert graph.edges["a"] == ("b",)

    def test_builder_changes_do_not_leak_into_compiled_graph(self) -> None:
        b = chain("a", "b")
        graph = compiled(b)
        b.add_node("c", node_a).add_edge("a", "c")
        assert "c" not in graph.nodes
        assert graph.edges["a"] == ("b",)

    def test_edge_list_expands_joins_and_sorts(self) -> None:
        b = chain("b", "a").add_node("c", node_a)
        b.add_edge(["b", "a"], "c").add_edge("c", END)
        assert compiled(b).edge_list() == [
            (START, "b"),
            ("a", "c"),
            ("a", END),
            ("b", "a"),
            ("b", "c"),
            ("c", END),
        ]

    def test_lookups(self) -> None:
        b = chain("a", "b", "c").add_node("d", node_a)
        b.add_edge(["a", "b"], "d").add_edge("d", END)
        b.add_conditional_edge("b", router_end, [END])
        b.add_conditional_edge("b", router_other, [END])
        graph = compiled(b)
        assert [c.router for c in graph.routers_of("b")] == [router_end, router_other]
        assert graph.routers_of("a") == ()
        assert [j.target for j in graph.joins_of("a")] == ["d"]
        assert graph.joins_of("c") == ()
        assert graph.static_next("c") == (END,)
        assert graph.static_next("a") is None  # in a join
        assert graph.static_next("b") is None  # has routers

    def test_join_key_is_stable(self) -> None:
        b = chain("a", "b").add_node("c", node_a)
        b.add_edge(["a", "b"], "c").add_edge("c", END)
        (join,) = compiled(b).joins
        assert join.key == '[["a","b"],"c"]'
        other = chain("a", "b").add_node("c", node_a)
        other.add_edge(["b", "a"], "c").add_edge("c", END)
        (same,) = compiled(other).joins
        assert same.key == join.key


class TestTopologicalOrder:
    def test_linear(self) -> None:
        assert compiled(chain("x", "y", "z")).topological_order() == [
            START,
            "x",
            "y",
            "z",
            END,
        ]

    def test_siblings_alphabetical_and_dependencies_first(self) -> None:
        b = builder("C", "A", "B", "Z", "X", "Y")
        for name in ("C", "A", "B"):
            b.add_edge(START, name)
        b.add_edge("C", "Z").add_edge("C", "X").add_edge("C", "Y")
        for name in ("A", "B", "X", "Y", "Z"):
            b.add_edge(name, END)
        order = compiled(b).topological_order()
        assert order == [START, "A", "B", "C", "X", "Y", "Z", END]
        assert compiled(b).topological_order() == order

    def test_batches_are_fifo(self) -> None:
        # b's successor "a2" sorts before "z" but is released later: Kahn's order
        # is per batch, not a global priority queue.
        b = builder("b", "z", "a2").add_edge(START, "b").add_edge(START, "z")
        b.add_edge("b", "a2").add_edge("a2", END).add_edge("z", END)
        assert compiled(b).topological_order() == [START, "b", "z", "a2", END]

    def test_join_sources_before_target(self) -> None:
        b = builder("a", "m", "z").add_edge(START, "z").add_edge(START, "m")
        b.add_edge(["z", "m"], "a").add_edge("a", END)
        assert compiled(b).topological_order() == [START, "m", "z", "a", END]

    def test_repeatable_and_insertion_order_independent(self) -> None:
        one = chain("a", "b").add_node("c", node_a).add_edge(START, "c")
        one.add_edge("c", "b")
        two = builder("c", "b", "a").add_edge("c", "b").add_edge("b", END)
        two.add_edge(START, "c").add_edge("a", "b").add_edge(START, "a")
        g1, g2 = compiled(one), compiled(two)
        assert g1.topological_order() == g1.topological_order()
        assert g1.topological_order() == g2.topological_order()
        assert g1.topological_order() == [START, "a", "c", "b", END]

    def test_router_only_nodes_are_included_and_end_stays_last(self) -> None:
        b = builder("a", "zz").add_edge(START, "a").add_edge("a", END)
        b.add_edge("zz", END).add_conditional_edge("a", router_end, ["zz", END])
        order = compiled(b).topological_order()
        assert order[0] == START
        assert order[-1] == END
        assert set(order) == {START, "a", "zz", END}

    def test_start_and_end_present_when_only_routers_touch_them(self) -> None:
        # START/END are part of every graph (to_dot/to_mermaid always draw them);
        # the order must begin with START and end with END even when the entry
        # and the exit are conditional edges.
        b = builder("a").add_conditional_edge(START, lambda s: "a", ["a"])
        b.add_conditional_edge("a", router_end, {"done": END})
        order = compiled(b).topological_order()
        assert order == [START, "a", END]


# ---------------------------------------------------------------------- exports


def small_graph() -> Graph:
    b = chain("a", "b").add_conditional_edge("a", router_end, {"again": "a", "x": END})
    return compiled(b)


class TestExports:
    def test_mermaid_exact(self) -> None:
        assert small_graph().to_mermaid() == (
            "flowchart TD\n"
            '    n0(["START"])\n'
            '    n1["a"]\n'
            '    n2["b"]\n'
            '    n3(["END"])\n'
            "    n0 --> n1\n"
            "    n1 --> n2\n"
            "    n2 --> n3\n"
            "    n1 -.-> n1\n"
            "    n1 -.-> n3\n"
        )

    def test_dot_exact(self) -> None:
        assert small_graph().to_dot() == (
            "digraph {\n"
            "    rankdir=TB;\n"
            "    node [shape=box, style=rounded];\n"
            '    0 [ label="START" style="filled" fillcolor="lightgreen" ];\n'
            '    1 [ label="a" ];\n'
            '    2 [ label="b" ];\n'
            '    3 [ label="END" style="filled" fillcolor="lightcoral" ];\n'
            "\n"
            "    0 -> 1;\n"
            "    1 -> 2;\n"
            "    2 -> 3;\n"
            "    1 -> 1 [style=dashed];\n"
            "    1 -> 3 [style=dashed];\n"
            "}\n"
        )

    def test_start_end_only(self) -> None:
        graph = compiled(GraphBuilder().add_edge(START, END))
        assert graph.to_mermaid() == (
            'flowchart TD\n    n0(["START"])\n    n1(["END"])\n    n0 --> n1\n'
        )
        assert '0 [ label="START"' in graph.to_dot()
        assert "    0 -> 1;\n" in graph.to_dot()

    def test_undeclared_router_in_exports(self) -> None:
        graph = compiled(chain("a").add_conditional_edge("a", router_end))
        assert "    n1 -. router .-> n1\n" in graph.to_mermaid()
        assert "dashed" not in graph.to_dot()

    def test_joins_are_drawn_as_edges(self) -> None:
        b = chain("a", "b").add_node("c", node_a)
        graph = compiled(b.add_edge(["a", "b"], "c").add_edge("c", END))
        mermaid = graph.to_mermaid()
        assert '    n3["c"]\n' in mermaid
        assert "    n1 --> n3\n" in mermaid
        assert "    n2 --> n3\n" in mermaid

    def test_labels_are_escaped(self) -> None:
        name = 'say "hi"\\'
        b = builder(name).add_edge(START, name).add_edge(name, END)
        graph = compiled(b)
        assert '    n1["say #quot;hi#quot;\\"]\n' in graph.to_mermaid()
        assert '    1 [ label="say \\"hi\\"\\\\" ];\n' in graph.to_dot()

    def test_exports_are_deterministic(self) -> None:
        one = chain("b", "a").add_edge(START, "a")
        two = builder("a", "b").add_edge(START, "a").add_edge("a", END)
        two.add_edge("b", "a").add_edge(START, "b")
        assert compiled(one).to_dot() == compiled(two).to_dot()
        assert compiled(one).to_mermaid() == compiled(two).to_mermaid()


# ------------------------------------------------------------------- graph hash


def base_builder() -> GraphBuilder:
    b = chain("a", "b", "c").add_node("d", node_a)
    b.add_edge(["a", "b"], "d").add_edge("d", END)
    b.add_conditional_edge("c", router_end, {"stop": END})
    return b


class TestGraphHash:
    def test_is_hex_and_stable(self) -> None:
        h = compiled(base_builder()).graph_hash
        assert re.fullmatch(r"[0-9a-f]{32}", h)
        assert compiled(base_builder()).graph_hash == h

    def test_independent_of_insertion_order(self) -> None:
        b = GraphBuilder()
        for name in ("d", "c", "b", "a"):
            b.add_node(name, node_a)
        b.add_conditional_edge("c", router_end, {"stop": END})
        b.add_edge("d", END).add_edge(["b", "a"], "d")
        for src, dst in [("c", END), ("b", "c"), ("a", "b"), (START, "a")]:
            b.add_edge(src, dst)
        assert compiled(b).graph_hash == compiled(base_builder()).graph_hash

    def test_independent_of_path_map_order(self) -> None:
        one = chain("a", "b").add_conditional_edge(
            "a", router_end, {"x": "b", "y": END}
        )
        two = chain("a", "b").add_conditional_edge(
            "a", router_end, {"y": END, "x": "b"}
        )
        assert compiled(one).graph_hash == compiled(two).graph_hash

    def _variants(self) -> dict[str, GraphBuilder]:
        extra_node = base_builder().add_node("e", node_a)
        extra_node.add_edge(START, "e").add_edge("e", END)
        other_body = GraphBuilder()
        for name in ("a", "b", "c", "d"):
            other_body.add_node(name, node_b if name == "c" else node_a)
        other_body.add_edge(START, "a").add_edge("a", "b").add_edge("b", "c")
        other_body.add_edge("c", END).add_edge(["a", "b"], "d").add_edge("d", END)
        other_body.add_conditional_edge("c", router_end, {"stop": END})

        def without_join() -> GraphBuilder:
            b = chain("a", "b", "c").add_node("d", node_a)
            b.add_edge("a", "d").add_edge("b", "d").add_edge("d", END)
            return b.add_conditional_edge("c", router_end, {"stop": END})

        def with_router(
            router: Any = router_end, path_map: Any = "base", count: int = 1
        ) -> GraphBuilder:
            b = chain("a", "b", "c").add_node("d", node_a)
            b.add_edge(["a", "b"], "d").add_edge("d", END)
            for _ in range(count):
                b.add_conditional_edge(
                    "c", router, {"stop": END} if path_map == "base" else path_map
                )
            return b

        timed = GraphBuilder()
        for name in ("a", "b", "c", "d"):
            timed.add_node(name, node_a, timeout=1.0 if name == "a" else None)
        timed.add_edge(START, "a").add_edge("a", "b").add_edge("b", "c")
        timed.add_edge("c", END).add_edge(["a", "b"], "d").add_edge("d", END)
        timed.add_conditional_edge("c", router_end, {"stop": END})

        ungated = GraphBuilder()
        for name in ("a", "b", "c", "d"):
            ungated.add_node(name, node_a, gated=name != "b")
        ungated.add_edge(START, "a").add_edge("a", "b").add_edge("b", "c")
        ungated.add_edge("c", END).add_edge(["a", "b"], "d").add_edge("d", END)
        ungated.add_conditional_edge("c", router_end, {"stop": END})

        return {
            "base": base_builder(),
            "extra node": extra_node,
            "other node body": other_body,
            "timeout": timed,
            "extra edge": base_builder().add_edge("a", "c"),
            "join as plain edges": without_join(),
            "other router": with_router(router_other),
            "other path map key": with_router(path_map={"halt": END}),
            "other path map target": with_router(path_map={"stop": END, "x": "a"}),
            "empty path map": with_router(path_map={}),
            "no path map": with_router(path_map=None),
            "two routers": with_router(count=2),
            "extra reducer": base_builder().with_reducer("messages", keep_last),
            "replaced reducer": base_builder().with_reducer(
                "messages", keep_last, replace=True
            ),
            "reducer on another channel": base_builder().with_reducer(
                "errors", keep_last
            ),
            "key reducer": base_builder().with_key_reducer("facts", "append"),
            "other key reducer": base_builder().with_key_reducer("facts", "add"),
            "key reducer on another key": base_builder().with_key_reducer(
                "notes", "append"
            ),
            "custom key reducer": base_builder().with_key_reducer("facts", keep_last),
            "two key reducers": base_builder()
            .with_key_reducer("facts", "append")
            .with_key_reducer("notes", "append"),
            "ungated node": ungated,
        }

    def test_sensitive_to_every_part(self) -> None:
        hashes = {k: compiled(b).graph_hash for k, b in self._variants().items()}
        assert len(set(hashes.values())) == len(hashes), hashes

    def test_key_reducers_hash_independent_of_declaration_order(self) -> None:
        one = base_builder().with_key_reducer("a", "add").with_key_reducer("b", "merge")
        two = base_builder().with_key_reducer("b", "merge").with_key_reducer("a", "add")
        assert compiled(one).graph_hash == compiled(two).graph_hash

    def test_name_and_function_of_a_builtin_hash_alike(self) -> None:
        by_name = base_builder().with_key_reducer("facts", "append")
        by_function = base_builder().with_key_reducer("facts", reducers.append)
        assert compiled(by_name).graph_hash == compiled(by_function).graph_hash

    def test_gated_true_is_the_default_hash(self) -> None:
        explicit = GraphBuilder().add_node("a", node_a, gated=True)
        explicit.add_edge(START, "a").add_edge("a", END)
        default = GraphBuilder().add_node("a", node_a)
        default.add_edge(START, "a").add_edge("a", END)
        assert compiled(explicit).graph_hash == compiled(default).graph_hash

    def test_base_variant_matches(self) -> None:
        assert (
            compiled(self._variants()["base"]).graph_hash
            == compiled(base_builder()).graph_hash
        )


# ------------------------------------------------------------- property tests


@settings(max_examples=75, deadline=None)
@given(dags())
def test_random_dags_compile_and_sort_forward(spec: DagSpec) -> None:
    graph = build_dag(spec).compile().graph
    order = graph.topological_order()
    assert len(order) == len(set(order))
    assert set(order) == {*spec.names, START, END}
    assert order[0] == START
    assert order[-1] == END
    position = {name: i for i, name in enumerate(order)}
    assert set(graph.edge_list()) == spec.all_pairs()
    for source, target in graph.edge_list():
        assert position[source] < position[target], (source, target)


@settings(max_examples=75, deadline=None)
@given(dag_with_shuffled_insertion())
def test_random_dags_are_insertion_order_independent(
    case: tuple[DagSpec, GraphBuilder, GraphBuilder],
) -> None:
    _, natural, shuffled = case
    one, two = natural.compile().graph, shuffled.compile().graph
    assert one.graph_hash == two.graph_hash
    assert one.topological_order() == two.topological_order()
    assert one.edge_list() == two.edge_list()
    assert one.to_dot() == two.to_dot()
    assert one.to_mermaid() == two.to_mermaid()


@settings(max_examples=50, deadline=None)
@given(dags(), st.data())
def test_random_back_edge_is_a_cycle(spec: DagSpec, data: st.DataObject) -> None:
    inner = sorted(
        (s, t) for s, t in spec.all_pairs() if s not in (START, END) and t != END
    )
    if not inner:
        return
    source, target = data.draw(st.sampled_from(inner))
    b = build_dag(spec).add_edge(target, source)
    with pytest.raises(CycleError) as info:
        b.compile()
    cycle = info.value.cycle
    assert cycle[0] == cycle[-1]
    assert len(cycle) >= 3
    pairs = spec.all_pairs() | {(target, source)}
    assert all(pair in pairs for pair in itertools.pairwise(cycle))


@settings(max_examples=50, deadline=None)
@given(dags(), st.data())
def test_random_orphan_is_unreachable(spec: DagSpec, data: st.DataObject) -> None:
    target = data.draw(st.sampled_from([*spec.names, END]))
    b = build_dag(spec).add_node("orphan", node_a).add_edge("orphan", target)
    with pytest.raises(UnreachableNodesError) as info:
        b.compile()
    assert info.value.nodes == ("orphan",)
