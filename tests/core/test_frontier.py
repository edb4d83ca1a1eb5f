"""Version gating, next-frontier rules, routers, joins and the start frontier."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import DagSpec, build_dag, dags

from weavegraph import (
    END,
    START,
    Append,
    Graph,
    GraphBuilder,
    Message,
    NodePartial,
    Replace,
    RouterError,
    StateSnapshot,
    VersionedState,
    WeavegraphError,
)
from weavegraph._core.frontier import (
    FrontierOutcome,
    JoinProgress,
    is_complete,
    next_frontier,
    partition,
    route,
    start_frontier,
)
from weavegraph._core.graph import ConditionalEdge
from weavegraph.lowlevel import apply_barrier

LOGGER = "weavegraph.frontier"


async def node(snapshot: StateSnapshot, ctx: Any) -> None:
    """A valid node body."""


def graph_of(
    edges: Sequence[tuple[Any, str]] = (),
    *,
    routers: Sequence[tuple[str, Any] | tuple[str, Any, Any]] = (),
    nodes: Sequence[str] = (),
    destinations: dict[str, list[str]] | None = None,
) -> Graph:
    """A compiled graph; every name used by an edge is registered as a node.

    ``destinations`` declares the targets of a node's frontier commands.
    """
    destinations = destinations or {}
    names: dict[str, None] = dict.fromkeys(nodes)
    for source, target in edges:
        for name in [*([source] if isinstance(source, str) else source), target]:
            if name not in (START, END):
                names[name] = None
    b = GraphBuilder()
    for name in names:
        b.add_node(name, node, destinations=destinations.get(name))
    for source, target in edges:
        b.add_edge(source, target)
    for spec in routers:
        b.add_conditional_edge(*spec)
    return b.compile().graph


def snap(**extra: Any) -> StateSnapshot:
    return VersionedState(extra=extra).snapshot()


def never(snapshot: StateSnapshot) -> Any:
    raise AssertionError("this router must not be evaluated")


def nf(
    graph: Graph,
    ran: Sequence[str],
    commands: Sequence[tuple[str, Any]] = (),
    snapshot: StateSnapshot | None = None,
    progress: JoinProgress | None = None,
) -> FrontierOutcome:
    return next_frontier(
        graph,
        ran,
        commands,
        snapshot if snapshot is not None else snap(),
        progress if progress is not None else {},
    )


# ----------------------------------------------------------------- gating


class TestPartition:
    def test_never_run_nodes_run(self) -> None:
        assert partition(["a", "b"], {}, (1, 1)) == (["a", "b"], [])

    def test_start_and_end_always_skipped(self) -> None:
        frontier = [START, "a", END, "b"]
        assert partition(frontier, {}, (1, 1)) == (["a", "b"], [START, END])
        assert partition([END], {}, (9, 9)) == ([], [END])

    def test_recorded_node_skipped_until_versions_grow(self) -> None:
        seen = {"a": (2, 3)}
        assert partition(["a"], seen, (2, 3)) == ([], ["a"])
        assert partition(["a"], seen, (3, 3)) == (["a"], [])
        assert partition(["a"], seen, (2, 4)) == (["a"], [])
        assert partition(["a"], seen, (3, 4)) == (["a"], [])

    def test_errors_version_is_not_considered(self) -> None:
        # Only (messages, extra) are recorded and compared.
        assert partition(["a"], {"a": (1, 1)}, (1, 1)) == ([], ["a"])

    def test_ungated_nodes_always_run(self) -> None:
        seen = {"a": (2, 3), "b": (2, 3)}
        assert partition(["a", "b"], seen, (2, 3), {"b"}) == (["b"], ["a"])
        assert partition([START, "b", END], seen, (2, 3), {"b"}) == (
            ["b"],
            [START, END],
        )

    def test_ungated_from_the_compiled_graph(self) -> None:
        g = (
            GraphBuilder()
            .add_node("poll", node, gated=False)
            .add_node("work", node)
            .add_edge(START, "poll")
            .add_edge("poll", "work")
            .add_edge("work", END)
            .compile()
            .graph
        )
        assert g.ungated == frozenset({"poll"})
        seen = {"poll": (1, 1), "work": (1, 1)}
        assert partition(["poll", "work"], seen, (1, 1), g.ungated) == (
            ["poll"],
            ["work"],
        )

    def test_recorded_versions_newer_than_state(self) -> None:
        assert partition(["a"], {"a": (5, 5)}, (2, 2)) == ([], ["a"])

    def test_keeps_frontier_order(self) -> None:
        seen = {"b": (1, 1), "d": (1, 1)}
        to_run, skipped = partition(["d", "c", START, "b", "a"], seen, (1, 1))
        assert to_run == ["c", "a"]
        assert skipped == ["d", START, "b"]

    def test_gating_per_node(self) -> None:
        seen = {"a": (1, 1), "b": (2, 1)}
        assert partition(["a", "b"], seen, (2, 1)) == (["a"], ["b"])

    def test_is_complete(self) -> None:
        assert is_complete([])
        assert is_complete([END])
        assert is_complete([START, END])
        assert not is_complete(["a"])
        assert not is_complete(["a", END])


# ------------------------------------------------------------------- defaults


class TestDefaults:
    def test_plain_edges_in_insertion_order(self) -> None:
        g = graph_of([(START, "a"), ("a", "z"), ("a", "b"), ("z", END), ("b", END)])
        assert nf(g, ["a"]) == FrontierOutcome(("z", "b"))

    def test_several_ran_nodes_in_ran_order(self) -> None:
        g = graph_of(
            [
                (START, "a"),
                (START, "b"),
                ("a", "x"),
                ("b", "y"),
                ("b", "x"),
                ("x", END),
                ("y", END),
            ]
        )
        assert nf(g, ["b", "a"]).frontier == ("y", "x")
        assert nf(g, ["a", "b"]).frontier == ("x", "y")

    def test_end_target(self) -> None:
        g = graph_of([(START, "a"), ("a", END)])
        assert nf(g, ["a"]).frontier == (END,)

    def test_nothing_ran(self) -> None:
        g = graph_of([(START, "a"), ("a", END)])
        assert nf(g, []).frontier == ()

    def test_slow_path_agrees_with_fast_path(self) -> None:
        g = graph_of([(START, "a"), ("a", "b"), ("a", "c"), ("b", END), ("c", END)])
        fast = nf(g, ["a"])
        slow = nf(g, ["a", "b"])
        assert fast.frontier == ("b", "c")
        assert slow.frontier == ("b", "c", END)
        assert nf(g, ["a"], [("a", Append([]))]).frontier == fast.frontier


# ------------------------------------------------------------- frontier commands


class TestCommands:
    def graph(self) -> Graph:
        return graph_of(
            [(START, "a"), ("a", "b"), ("b", END), ("c", END), ("d", END)],
            routers=[("a", lambda s: "d", ["d"])],
            destinations={"a": ["c"]},
        )

    def test_replace_suppresses_defaults_and_routers(self) -> None:
        g = graph_of(
            [(START, "a"), ("a", "b"), ("b", END), ("c", END)],
            routers=[("a", never, ["b"])],
            destinations={"a": ["c"]},
        )
        assert nf(g, ["a"], [("a", Replace(["c"]))]).frontier == ("c",)

    def test_append_adds_to_defaults_and_keeps_routers(self) -> None:
        out = nf(self.graph(), ["a"], [("a", Append(["c"]))])
        assert out.frontier == ("b", "c", "d")

    def test_append_empty_is_defaults(self) -> None:
        g = self.graph()
        assert nf(g, ["a"], [("a", Append([]))]) == nf(g, ["a"])

    def test_replace_empty_is_a_dead_end(self) -> None:
        g = graph_of([(START, "a"), ("a", "b"), ("b", END)], routers=[("a", never)])
        assert nf(g, ["a"], [("a", Replace([]))]).frontier == ()

    def test_dead_end_of_one_branch_only(self) -> None:
        g = graph_of([(START, "a"), (START, "b"), ("a", END), ("b", "c"), ("c", END)])
        out = nf(g, ["a", "b"], [("b", Replace([]))])
        assert out.frontier == (END,)

    def test_commands_apply_only_to_their_origin(self) -> None:
        g = graph_of(
            [(START, "a"), (START, "b"), ("a", "x"), ("b", "y"), ("x", END), ("y", END)]
        )
        out = nf(g, ["a", "b"], [("b", Replace(["x"]))])
        assert out.frontier == ("x",)
        out = nf(g, ["a", "b"], [("a", Replace(["y"]))])
        assert out.frontier == ("y",)

    def test_command_from_a_node_that_did_not_run_is_ignored(self) -> None:
        g = graph_of([(START, "a"), ("a", "b"), ("b", END)])
        assert nf(g, ["a"], [("b", Replace([END]))]).frontier == ("b",)

    def test_replace_with_end_and_start(self) -> None:
        g = graph_of([(START, "a"), ("a", "b"), ("b", END)])
        assert nf(g, ["a"], [("a", Replace([END, START]))]).frontier == (END, START)

    def test_second_replace_from_same_origin_ignored(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        g = graph_of(
            [(START, "a"), ("a", "b"), ("b", END), ("c", END)],
            destinations={"a": ["c"]},
        )
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            out = nf(g, ["a"], [("a", Replace(["c"])), ("a", Replace(["b"]))])
        assert out.frontier == ("c",)
        assert any("second Replace" in r.getMessage() for r in caplog.records)

    def test_replace_then_append_from_same_origin(self) -> None:
        g = graph_of(
            [(START, "a"), ("a", "b"), ("b", END), ("c", END), ("d", END)],
            destinations={"a": ["c", "d"]},
        )
        out = nf(g, ["a"], [("a", Replace(["c"])), ("a", Append(["d"]))])
        assert out.frontier == ("c", "d")

    def test_append_then_replace_from_same_origin(self) -> None:
        g = graph_of(
            [(START, "a"), ("a", "b"), ("b", END), ("c", END), ("d", END)],
            destinations={"a": ["c", "d"]},
        )
        out = nf(g, ["a"], [("a", Append(["d"])), ("a", Replace(["c"]))])
        assert out.frontier == ("c",)

    def test_command_outside_declared_destinations_is_an_error(self) -> None:
        g = graph_of(
            [(START, "a"), ("a", "b"), ("b", END), ("c", END)],
            destinations={"a": ["c"]},
        )
        # "b" is a registered node, but "a" declared only "c".
        with pytest.raises(RouterError) as info:
            nf(g, ["a"], [("a", Replace(["b"]))])
        text = str(info.value)
        assert "node 'a' returned Replace(['b'])" in text
        assert "'b' is not among its declared destinations ['c']" in text
        assert "destinations=[...]" in text

    def test_end_must_be_declared_when_destinations_are(self) -> None:
        g = graph_of(
            [(START, "a"), ("a", "b"), ("b", END), ("c", END)],
            destinations={"a": ["c"]},
        )
        with pytest.raises(RouterError, match="END is not among"):
            nf(g, ["a"], [("a", Append([END]))])
        declared = graph_of(
            [(START, "a"), ("a", "b"), ("b", END), ("c", END)],
            destinations={"a": ["c", END]},
        )
        assert nf(declared, ["a"], [("a", Replace([END]))]).frontier == (END,)

    def test_typo_in_a_destination_gets_a_hint(self) -> None:
        g = graph_of(
            [(START, "a"), ("a", "b"), ("b", END), ("worker", END)],
            destinations={"a": ["worker"]},
        )
        with pytest.raises(RouterError, match=r"did you mean 'worker'\?"):
            nf(g, ["a"], [("a", Replace(["wroker"]))])

    def test_undeclared_senders_may_name_any_node(self) -> None:
        g = graph_of([(START, "a"), (START, "c"), ("a", "b"), ("b", END), ("c", END)])
        out = nf(g, ["a"], [("a", Append(["c", END]))])
        assert out.frontier == ("b", "c", END)

    def test_commands_through_the_barrier(self) -> None:
        g = graph_of(
            [(START, "a"), (START, "b"), ("a", "x"), ("b", "y"), ("x", END), ("y", END)]
        )
        barrier = apply_barrier(
            VersionedState(),
            ["a", "b"],
            [NodePartial(frontier=Append(["y"])), NodePartial(frontier=Replace([END]))],
        )
        out = nf(g, ["a", "b"], barrier.frontier_commands, barrier.state.snapshot())
        assert out.frontier == ("x", "y", END)


# ----------------------------------------------------------------------- routers


class TestRouters:
    def test_router_evaluated_on_post_barrier_snapshot(self) -> None:
        seen: list[int] = []

        def router(snapshot: StateSnapshot) -> str:
            seen.append(snapshot.extra["count"])
            return "x" if snapshot.extra["count"] < 3 else END

        g = graph_of([(START, "x")], routers=[("x", router, ["x", END])])
        state = VersionedState(extra={"count": 2})
        barrier = apply_barrier(state, ["x"], [NodePartial(extra={"count": 3})])
        out = nf(g, ["x"], barrier.frontier_commands, barrier.state.snapshot())
        assert seen == [3]
        assert out.frontier == (END,)
        assert nf(g, ["x"], snapshot=state.snapshot()).frontier == ("x",)

    def test_defaults_then_routers_in_registration_order(self) -> None:
        g = graph_of(
            [(START, "a"), ("a", "b")] + [(n, END) for n in "bcde"],
            routers=[("a", lambda s: ["d", "c"]), ("a", lambda s: "e")],
        )
        assert nf(g, ["a"]).frontier == ("b", "d", "c", "e")

    def test_router_results_lists_and_tuples(self) -> None:
        for result in (["b", END], ("b", END)):
            g = graph_of(
                [(START, "a"), ("b", END)],
                routers=[("a", lambda s, r=result: r)],
            )
            assert nf(g, ["a"]).frontier == ("b", END)

    @pytest.mark.parametrize("result", [[], (), set(), frozenset()], ids=repr)
    def test_an_empty_result_is_an_error(self, result: Any) -> None:
        # No silent endings: a branch ends by routing to END.
        g = graph_of([(START, "a"), ("a", END)], routers=[("a", lambda s: result)])
        with pytest.raises(RouterError, match=r"router of 'a'.*names no node.*END"):
            nf(g, ["a"])

    def test_path_map_lookups(self) -> None:
        g = graph_of(
            [(START, "a"), ("yes_node", END), ("no_node", END)],
            routers=[
                ("a", lambda s: s.extra["answer"], {True: "yes_node", False: "no_node"})
            ],
        )
        assert nf(g, ["a"], snapshot=snap(answer=True)).frontier == ("yes_node",)
        assert nf(g, ["a"], snapshot=snap(answer=False)).frontier == ("no_node",)

    def test_path_map_with_list_results(self) -> None:
        g = graph_of(
            [(START, "a"), ("x", END), ("y", END)],
            routers=[("a", lambda s: [2, 1, "done"], {1: "x", 2: "y", "done": END})],
        )
        assert nf(g, ["a"]).frontier == ("y", "x", END)

    def test_path_map_accepts_its_declared_targets_by_name(self) -> None:
        g = graph_of(
            [(START, "a"), ("x", END), ("y", END)],
            routers=[("a", lambda s: ["x", "k"], {"k": "x", "j": "y"})],
        )
        assert nf(g, ["a"]).frontier == ("x",)

    def test_path_map_keys_win_over_target_names(self) -> None:
        g = graph_of(
            [(START, "a"), ("x", END), ("y", END)],
            routers=[("a", lambda s: "x", {"x": "y", "z": "x"})],
        )
        assert nf(g, ["a"]).frontier == ("y",)

    def test_result_outside_the_path_map_is_an_error(self) -> None:
        # "y" is a registered node, but not one this router declared.
        g = graph_of(
            [(START, "a"), ("x", END), ("y", END)],
            routers=[("a", lambda s: ["y", "k"], {"k": "x"})],
            destinations={"a": ["y"]},
        )
        with pytest.raises(RouterError) as info:
            nf(g, ["a"])
        text = str(info.value)
        assert "router of 'a'" in text
        assert "'y'" in text
        assert "not among its declared targets" in text
        assert "['k']" in text
        assert "['x']" in text

    def test_end_outside_a_path_map_is_an_error(self) -> None:
        g = graph_of([(START, "a"), ("x", END)], routers=[("a", lambda s: END, ["x"])])
        with pytest.raises(RouterError, match="declared targets"):
            nf(g, ["a"])

    def test_typo_in_a_path_map_result_gets_a_hint(self) -> None:
        g = graph_of(
            [(START, "a"), ("x", END), ("y", END)],
            routers=[("a", lambda s: "approve", {"approved": "x", "rejected": "y"})],
        )
        with pytest.raises(RouterError, match=r"did you mean 'approved'\?"):
            nf(g, ["a"])

    def test_path_map_unmapped_non_string_result(self) -> None:
        g = graph_of([(START, "a"), ("x", END)], routers=[("a", lambda s: 7, {1: "x"})])
        with pytest.raises(RouterError, match=r"'a'.*7.*path_map"):
            nf(g, ["a"])

    def test_duplicates_collapse_first_occurrence_wins(self) -> None:
        g = graph_of(
            [
                (START, "a"),
                (START, "b"),
                ("a", "x"),
                ("b", "y"),
                ("b", "x"),
                ("x", END),
                ("y", END),
            ],
            routers=[("a", lambda s: ["y", "x", "y", END])],
        )
        assert nf(g, ["a", "b"]).frontier == ("x", "y", END)

    def test_unknown_router_target_is_an_error(self) -> None:
        g = graph_of(
            [(START, "a"), ("a", "b"), ("b", END)],
            routers=[("a", lambda s: ["b", "ghost", "phantom"])],
        )
        with pytest.raises(RouterError) as info:
            nf(g, ["a"])
        text = str(info.value)
        # The source node, the value and the allowed targets.
        assert "router of 'a'" in text
        assert "'ghost'" in text
        assert "names no node" in text
        assert "allowed targets: ['a', 'b', END]" in text
        assert isinstance(info.value, WeavegraphError)

    def test_unknown_router_target_of_a_plain_string(self) -> None:
        g = graph_of(
            [(START, "a"), ("a", END), ("b", END)], routers=[("a", lambda s: "B")]
        )
        with pytest.raises(RouterError, match=r"'B'.*did you mean 'b'\?"):
            nf(g, ["a"])

    def test_long_lists_of_allowed_targets_are_cut(self) -> None:
        names = [f"n{i:02}" for i in range(30)]
        g = graph_of(
            [(START, "a"), ("a", END), *((n, END) for n in names)],
            routers=[("a", lambda s: "zzz")],
        )
        with pytest.raises(RouterError, match=r"\.\.\. \(20 more\)"):
            nf(g, ["a"])

    def test_unknown_command_target_is_an_error(self) -> None:
        g = graph_of([(START, "a"), ("a", "b"), ("b", END)])
        with pytest.raises(RouterError) as info:
            nf(g, ["a"], [("a", Append(["ghost"]))])
        text = str(info.value)
        assert "node 'a' returned Append(['ghost'])" in text
        assert "'ghost' names no node" in text
        assert "allowed targets: ['a', 'b', END]" in text

    def test_start_and_end_targets_accepted(self) -> None:
        g = graph_of([(START, "a")], routers=[("a", lambda s: [START, END])])
        assert nf(g, ["a"]).frontier == (START, END)

    @pytest.mark.parametrize(
        "result", [None, 3, 2.5, b"b", {"b": 1}, ["b", 3], [None], [["b"]]], ids=repr
    )
    def test_non_string_results(self, result: Any) -> None:
        g = graph_of(
            [(START, "a"), ("a", END), ("b", END)], routers=[("a", lambda s: result)]
        )
        with pytest.raises(RouterError, match="'a'") as info:
            nf(g, ["a"])
        assert isinstance(info.value, WeavegraphError)

    def test_raising_router(self) -> None:
        def router(snapshot: StateSnapshot) -> str:
            raise KeyError("decision")

        g = graph_of([(START, "a"), ("a", END)], routers=[("a", router)])
        with pytest.raises(RouterError, match=r"'a'.*KeyError") as info:
            nf(g, ["a"])
        assert isinstance(info.value.__cause__, KeyError)

    @pytest.mark.parametrize("item", [["x"], {"k": 1}, {1, 2}, ("x", [1])], ids=repr)
    def test_unhashable_results_with_a_path_map(self, item: Any) -> None:
        g = graph_of(
            [(START, "a"), ("a", END), ("x", END)],
            routers=[("a", lambda s: [item], {"x": "x"})],
        )
        with pytest.raises(RouterError, match="'a'"):
            nf(g, ["a"])

    def test_route_directly(self) -> None:
        edge = ConditionalEdge("a", lambda s: "b")
        assert route(edge, snap()) == ["b"]
        mapped = ConditionalEdge("a", lambda s: ["k", "c"], {"k": "c"})
        assert route(mapped, snap()) == ["c", "c"]
        with pytest.raises(RouterError, match="declared targets"):
            route(ConditionalEdge("a", lambda s: "b", {"k": "c"}), snap())
        with pytest.raises(RouterError):
            route(ConditionalEdge("a", lambda s: 1), snap())

    def test_route_checks_names_against_the_graph(self) -> None:
        g = graph_of([(START, "a"), (START, "b"), ("a", END), ("b", END)])
        edge = ConditionalEdge("a", lambda s: "ghost")
        assert route(edge, snap()) == ["ghost"]  # no graph: names unchecked
        with pytest.raises(RouterError, match="names no node"):
            route(edge, snap(), g)
        assert route(ConditionalEdge("a", lambda s: ["b", END]), snap(), g) == [
            "b",
            END,
        ]

    def test_router_from_start_node_label(self) -> None:
        edge = ConditionalEdge(START, lambda s: 1)
        with pytest.raises(RouterError, match="'START'"):
            route(edge, snap())


# ------------------------------------------------------------------------ joins


def join_graph() -> Graph:
    """START -> a, b; join [a, b] -> c; c -> END; a -> x -> END."""
    return graph_of(
        [
            (START, "a"),
            (START, "b"),
            (["a", "b"], "c"),
            ("c", END),
            ("a", "x"),
            ("x", END),
        ]
    )


class TestJoins:
    def test_target_waits_for_every_source(self) -> None:
        g = join_graph()
        key = g.joins[0].key
        first = nf(g, ["a"])
        assert first.frontier == ("x",)
        assert dict(first.join_progress) == {key: frozenset({"a"})}
        second = nf(g, ["b"], progress=first.join_progress)
        assert second.frontier == ("c",)
        assert dict(second.join_progress) == {}

    def test_all_sources_in_one_step(self) -> None:
        g = join_graph()
        out = nf(g, ["a", "b"])
        assert out.frontier == ("x", "c")
        assert dict(out.join_progress) == {}

    def test_scheduled_once_even_if_a_source_runs_twice(self) -> None:
        g = join_graph()
        key = g.joins[0].key
        p1 = nf(g, ["a"]).join_progress
        p2 = nf(g, ["a"], progress=p1).join_progress
        assert dict(p2) == {key: frozenset({"a"})}
        out = nf(g, ["b"], progress=p2)
        assert out.frontier == ("c",)
        assert dict(out.join_progress) == {}
        # The next round needs both sources again.
        again = nf(g, ["b"], progress=out.join_progress)
        assert again.frontier == ()
        assert dict(again.join_progress) == {key: frozenset({"b"})}

    def test_reset_when_target_runs(self) -> None:
        g = join_graph()
        key = g.joins[0].key
        progress = {key: frozenset({"a"})}
        out = nf(g, ["c"], progress=progress)
        assert out.frontier == (END,)
        assert dict(out.join_progress) == {}
        # b alone is not enough any more.
        assert nf(g, ["b"], progress=out.join_progress).frontier == ()

    def test_progress_carried_when_unrelated_nodes_run(self) -> None:
        g = join_graph()
        key = g.joins[0].key
        progress = {key: frozenset({"b"})}
        out = nf(g, ["x"], progress=progress)
        assert out.frontier == (END,)
        assert dict(out.join_progress) == progress

    def test_progress_input_not_mutated(self) -> None:
        g = join_graph()
        key = g.joins[0].key
        progress = {key: frozenset({"a"})}
        nf(g, ["b"], progress=progress)
        nf(g, ["c"], progress=progress)
        assert progress == {key: frozenset({"a"})}

    def test_three_way_join(self) -> None:
        g = graph_of(
            [
                (START, "a"),
                (START, "b"),
                (START, "c"),
                (["a", "b", "c"], "d"),
                ("d", END),
            ]
        )
        p = nf(g, ["c"]).join_progress
        p = nf(g, ["a"], progress=p).join_progress
        assert nf(g, ["a"], progress=p).frontier == ()
        assert nf(g, ["b"], progress=p).frontier == ("d",)

    def test_two_joins_into_one_target_are_independent(self) -> None:
        g = graph_of(
            [(START, n) for n in "abxy"]
            + [(["a", "b"], "c"), (["x", "y"], "c"), ("c", END)]
        )
        out = nf(g, ["a", "x"])
        assert out.frontier == ()
        assert set(out.join_progress) == {j.key for j in g.joins}
        assert nf(g, ["b"], progress=out.join_progress).frontier == ("c",)
        assert nf(g, ["y"], progress=out.join_progress).frontier == ("c",)

    def test_join_keys_of_different_joins_never_collide(self) -> None:
        # Node names may contain '+': two distinct joins into the same target
        # must keep separate progress, so neither half-done join fires.
        g = graph_of(
            [(START, n) for n in ("a+b", "x", "a", "b+x")]
            + [(["a+b", "x"], "c"), (["a", "b+x"], "c"), ("c", END)]
        )
        half_done = nf(g, ["a+b", "a"])
        assert half_done.frontier == ()
        assert nf(g, ["x"], progress=half_done.join_progress).frontier == ("c",)
        assert nf(g, ["b+x"], progress=half_done.join_progress).frontier == ("c",)
        # The keys are what persisted join progress is filed under.
        assert len({j.key for j in g.joins}) == 2

    def test_join_plus_plain_edges_and_routers(self) -> None:
        g = graph_of(
            [
                (START, "a"),
                (START, "b"),
                (["a", "b"], "c"),
                ("c", END),
                ("a", "x"),
                ("x", END),
                ("y", END),
            ],
            routers=[("b", lambda s: "y")],
        )
        assert nf(g, ["b", "a"]).frontier == ("y", "x", "c")

    def test_join_target_deduplicated_with_other_edges(self) -> None:
        g = graph_of(
            [
                (START, "a"),
                (START, "b"),
                (["a", "b"], "c"),
                ("c", END),
                ("x", "c"),
                (START, "x"),
            ]
        )
        assert nf(g, ["x", "a", "b"]).frontier == ("c",)

    def test_multi_step_run_with_barriers(self) -> None:
        # START -> a, b; a -> a2 -> join; b -> join: the join fires one step later.
        g = graph_of(
            [(START, "a"), (START, "b"), ("a", "a2"), (["a2", "b"], "c"), ("c", END)]
        )
        state = VersionedState()
        seen: dict[str, tuple[int, int]] = {}
        progress: JoinProgress = {}
        frontier = start_frontier(g, state.snapshot()).frontier
        trace = []
        while not is_complete(frontier):
            to_run, _ = partition(frontier, seen, state.versions.gate_key())
            trace.append(tuple(to_run))
            for name in to_run:
                seen[name] = state.versions.gate_key()
            barrier = apply_barrier(
                state,
                to_run,
                [NodePartial(messages=[Message.assistant(n)]) for n in to_run],
            )
            state = barrier.state
            out = next_frontier(
                g, to_run, barrier.frontier_commands, state.snapshot(), progress
            )
            frontier, progress = out.frontier, out.join_progress
        assert trace == [("a", "b"), ("a2",), ("c",)]
        assert frontier == (END,)
        assert [m.content for m in state.messages] == ["a", "b", "a2", "c"]


# ---------------------------------------------------------------- start frontier


class TestStartFrontier:
    def test_plain_targets_in_insertion_order(self) -> None:
        g = graph_of([(START, "b"), (START, "a"), ("a", END), ("b", END)])
        out = start_frontier(g, snap())
        assert out.frontier == ("b", "a")
        assert out.dropped == ()

    def test_routers_after_plain_targets(self) -> None:
        g = graph_of(
            [(START, "a"), ("a", END), ("c", END)],
            routers=[(START, lambda s: ["c", "a"], ["a", "c"])],
        )
        assert start_frontier(g, snap()).frontier == ("a", "c")

    def test_router_reads_initial_state(self) -> None:
        g = graph_of(
            [("fast", END), ("slow", END)],
            routers=[(START, lambda s: s.extra["mode"], {"f": "fast", "s": "slow"})],
        )
        assert start_frontier(g, snap(mode="f")).frontier == ("fast",)
        assert start_frontier(g, snap(mode="s")).frontier == ("slow",)

    def test_router_only_entry_to_end(self) -> None:
        g = graph_of([("a", END)], routers=[(START, lambda s: END, ["a", END])])
        assert start_frontier(g, snap()).frontier == (END,)

    def test_unknown_router_target_is_an_error(self) -> None:
        g = graph_of([(START, "a"), ("a", END)], routers=[(START, lambda s: "ghost")])
        with pytest.raises(
            RouterError, match=r"router of 'START'.*'ghost'.*\['a', END\]"
        ):
            start_frontier(g, snap())

    def test_router_errors(self) -> None:
        g = graph_of([(START, "a"), ("a", END)], routers=[(START, lambda s: 1)])
        with pytest.raises(RouterError):
            start_frontier(g, snap())


# --------------------------------------------------------- worked traces (§2.18)


class TestWorkedTraces:
    def test_trace5_mixed_predicate_targets(self) -> None:
        # Unlike the reference, which drops "Invalid" with a warning, a typo in a
        # router result fails loudly.
        g = graph_of(
            [(START, "Root"), ("Root", "Valid"), ("Valid", END)],
            routers=[("Root", lambda s: ["Valid", "Invalid", END])],
        )
        state = VersionedState.with_user_message("go")
        to_run, skipped = partition(["Root"], {}, state.versions.gate_key())
        assert (to_run, skipped) == (["Root"], [])
        barrier = apply_barrier(
            state, to_run, [NodePartial(messages=[Message.assistant("root")])]
        )
        with pytest.raises(
            RouterError, match=r"'Root'.*'Invalid'.*did you mean 'Valid'\?"
        ):
            next_frontier(
                g, to_run, barrier.frontier_commands, barrier.state.snapshot()
            )

    def test_trace6_replace(self) -> None:
        g = graph_of([(START, "controller"), ("controller", "worker"), ("worker", END)])
        barrier = apply_barrier(
            VersionedState.with_user_message("go"),
            ["controller"],
            [NodePartial(frontier=Replace(["worker"]))],
        )
        assert barrier.frontier_commands == (("controller", Replace(["worker"])),)
        out = next_frontier(
            g, ["controller"], barrier.frontier_commands, barrier.state.snapshot()
        )
        assert out.frontier == ("worker",)

    def test_conditional_loop_until_count(self) -> None:
        # Trace 3: X increments count; routes to itself while count < 3.
        g = graph_of(
            [(START, "X")],
            routers=[("X", lambda s: ["X"] if s.extra["count"] < 3 else [END])],
        )
        state = VersionedState(extra={"count": 0})
        seen: dict[str, tuple[int, int]] = {}
        frontier = start_frontier(g, state.snapshot()).frontier
        steps = 0
        while not is_complete(frontier):
            to_run, _ = partition(frontier, seen, state.versions.gate_key())
            steps += 1
            for name in to_run:
                seen[name] = state.versions.gate_key()
            count = state.extra["count"]
            barrier = apply_barrier(
                state, to_run, [NodePartial(extra={"count": count + 1})] * len(to_run)
            )
            state = barrier.state
            frontier = next_frontier(
                g, to_run, barrier.frontier_commands, state.snapshot()
            ).frontier
        assert steps == 3
        assert state.extra["count"] == 3
        assert frontier == (END,)

    def test_loop_that_writes_nothing_is_gated_out(self) -> None:
        # Trace 3 variant: X writes nothing, so step 2 skips it and the run ends
        # without reaching END.
        g = graph_of([(START, "X")], routers=[("X", lambda s: "X")])
        state = VersionedState()
        seen: dict[str, tuple[int, int]] = {}
        frontier = start_frontier(g, state.snapshot()).frontier
        ran_per_step = []
        while not is_complete(frontier):
            to_run, _ = partition(frontier, seen, state.versions.gate_key())
            ran_per_step.append(to_run)
            for name in to_run:
                seen[name] = state.versions.gate_key()
            barrier = apply_barrier(state, to_run, [None] * len(to_run))
            state = barrier.state
            frontier = next_frontier(
                g, to_run, barrier.frontier_commands, state.snapshot()
            ).frontier
        assert ran_per_step == [["X"], []]
        assert frontier == ()


# ------------------------------------------------------------- property tests


@settings(max_examples=60, deadline=None)
@given(dags(), st.data())
def test_random_dag_frontiers_only_hold_successors(
    spec: DagSpec, data: st.DataObject
) -> None:
    graph = build_dag(spec).compile().graph
    ran = data.draw(st.lists(st.sampled_from(spec.names), unique=True, min_size=1))
    out = next_frontier(graph, ran, [], VersionedState().snapshot())
    assert len(out.frontier) == len(set(out.frontier))
    assert out.dropped == ()
    plain = {t for s, t in spec.edges if s in ran}
    join_targets = {t for _, t in spec.joins}
    assert plain <= set(out.frontier)
    assert set(out.frontier) <= plain | join_targets
    for sources, target in spec.joins:
        if set(sources) <= set(ran):
            assert target in out.frontier
        elif target not in plain:
            assert target not in out.frontier


@settings(max_examples=60, deadline=None)
@given(dags())
def test_random_dag_runs_terminate_and_run_every_node(spec: DagSpec) -> None:
    # Every node appends a message, so no scheduled node is gated out. On a DAG
    # the run ends within (number of nodes + 1) supersteps, every node runs at
    # least once (a join target fires once all its sources ran), and END is
    # reached. A join source that runs again after its join fired leaves
    # half-done progress behind, so the *last* frontier may be empty.
    graph = build_dag(spec).compile().graph
    state = VersionedState()
    seen: dict[str, tuple[int, int]] = {}
    progress: JoinProgress = {}
    frontier = start_frontier(graph, state.snapshot()).frontier
    ran_nodes: set[str] = set()
    reached_end = END in frontier
    steps = 0
    while not is_complete(frontier):
        steps += 1
        assert steps <= len(spec.names) + 1
        to_run, skipped = partition(frontier, seen, state.versions.gate_key())
        assert [n for n in skipped if n not in (START, END)] == []
        for name in to_run:
            seen[name] = state.versions.gate_key()
        ran_nodes.update(to_run)
        barrier = apply_barrier(
            state, to_run, [NodePartial(messages=[Message.tool(n)]) for n in to_run]
        )
        state = barrier.state
        out = next_frontier(
            graph, to_run, barrier.frontier_commands, state.snapshot(), progress
        )
        frontier, progress = out.frontier, out.join_progress
        reached_end = reached_end or END in frontier
    assert reached_end
    assert ran_nodes == set(spec.names)
