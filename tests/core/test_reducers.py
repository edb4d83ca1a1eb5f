"""Built-in reducers, the reducer registry and the superstep barrier."""

from __future__ import annotations

import datetime as dt
import types
from collections.abc import Mapping, Sequence
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import extra_updates, extras, frontier_runs, partials, states

from weavegraph import (
    END,
    START,
    Append,
    ErrorEvent,
    GraphBuilder,
    Message,
    NodePartial,
    Replace,
    StateError,
    StateSnapshot,
    VersionedState,
    WeavegraphError,
    add_errors,
    add_messages,
    map_merge,
    reducers,
)
from weavegraph._core.reducers import KeyConflict, ReducerRegistry
from weavegraph.errors import ErrorDetail, ErrorScope, ReducerError
from weavegraph.lowlevel import BarrierOutcome, History, Versions, apply_barrier

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def at(seconds: int) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def msg(text: str) -> Message:
    return Message.assistant(text)


def hi() -> VersionedState:
    return VersionedState.with_user_message("hi")


async def _node(snapshot: StateSnapshot, ctx: Any) -> None:
    """A valid node body."""


def registry_with(*reducers: tuple[str, Any, bool]) -> ReducerRegistry:
    """A compiled graph's registry with ``(channel, reducer, replace)`` added."""
    builder = GraphBuilder().add_edge(START, END)
    for channel, reducer, replace in reducers:
        builder.with_reducer(channel, reducer, replace=replace)
    return builder.compile().graph.reducers


# ------------------------------------------------------------- built-in reducers


class TestAddMessages:
    def test_appends_and_keeps_the_original(self) -> None:
        current = History([Message.user("a")])
        result = add_messages(current, [msg("b"), msg("c")])
        assert isinstance(result, History)
        assert result == [Message.user("a"), msg("b"), msg("c")]
        assert current == [Message.user("a")]

    def test_empty_update(self) -> None:
        current = History([Message.user("a")])
        assert add_messages(current, []) == current


class TestAddErrors:
    def test_appends_in_given_order(self) -> None:
        e1, e2 = ErrorEvent.app("one"), ErrorEvent.app("two")
        current: History[ErrorEvent] = History([e1])
        result = add_errors(current, [e2, e1])
        assert result == [e1, e2, e1]
        assert current == [e1]


class TestMapMerge:
    def test_sets_and_overwrites(self) -> None:
        assert dict(map_merge({"a": 1, "b": 2}, {"b": 3, "c": 4})) == {
            "a": 1,
            "b": 3,
            "c": 4,
        }

    def test_none_deletes(self) -> None:
        assert dict(map_merge({"a": 1, "b": 2}, {"a": None})) == {"b": 2}

    def test_deleting_an_absent_key_is_a_no_op(self) -> None:
        assert dict(map_merge({"a": 1}, {"zzz": None})) == {"a": 1}

    def test_falsy_values_are_kept(self) -> None:
        update = {"zero": 0, "empty": "", "false": False, "list": []}
        assert dict(map_merge({}, update)) == update

    def test_current_untouched_and_result_read_only(self) -> None:
        current = {"a": 1}
        result = map_merge(current, {"a": 2, "b": None})
        assert current == {"a": 1}
        assert isinstance(result, MappingProxyType)
        with pytest.raises(TypeError):
            result["a"] = 3  # type: ignore[index]

    def test_shallow(self) -> None:
        result = map_merge({"cfg": {"x": 1, "y": 2}}, {"cfg": {"x": 5}})
        assert dict(result) == {"cfg": {"x": 5}}


def reference_merge(current: Mapping[str, Any], update: Mapping[str, Any]) -> dict:
    """dict.update, then delete every key the update set to None."""
    result = dict(current)
    result.update(update)
    for key, value in update.items():
        if value is None:
            del result[key]
    return result


@settings(max_examples=200, deadline=None)
@given(extras, extra_updates)
def test_map_merge_matches_reference_model(
    current: dict[str, Any], update: dict[str, Any]
) -> None:
    before = dict(current)
    assert dict(map_merge(current, update)) == reference_merge(current, update)
    assert current == before


@settings(max_examples=100, deadline=None)
@given(extras, st.lists(extra_updates, max_size=4))
def test_map_merge_sequence_equals_merged_update(
    current: dict[str, Any], updates: list[dict[str, Any]]
) -> None:
    # Applying updates one by one is the same as merging them first (later keys
    # win) and applying once: what the barrier relies on.
    one_by_one: Mapping[str, Any] = current
    merged: dict[str, Any] = {}
    for update in updates:
        one_by_one = map_merge(one_by_one, update)
        merged.update(update)
    assert dict(one_by_one) == dict(map_merge(current, merged))


# --------------------------------------------------------------------- registry


class TestRegistry:
    def test_defaults(self) -> None:
        registry = ReducerRegistry()
        assert registry.by_channel["messages"] == (add_messages,)
        assert registry.by_channel["extra"] == (map_merge,)
        assert registry.by_channel["errors"] == (add_errors,)

    def test_with_reducer_returns_a_new_registry(self) -> None:
        base = ReducerRegistry()

        def custom(current: Any, update: Any) -> Any:
            return current

        added = base.with_reducer("extra", custom)
        assert added.by_channel["extra"] == (map_merge, custom)
        assert base.by_channel["extra"] == (map_merge,)
        replaced = added.with_reducer("extra", custom, replace=True)
        assert replaced.by_channel["extra"] == (custom,)

    def test_signature_names_reducers(self) -> None:
        assert ReducerRegistry().signature() == [
            "errors:[weavegraph._core.reducers.add_errors]",
            "extra:[weavegraph._core.reducers.map_merge]",
            "messages:[weavegraph._core.reducers.add_messages]",
        ]


# ---------------------------------------------------------------------- barrier


class TestBarrierMerge:
    def test_messages_concatenate_in_frontier_order(self) -> None:
        out = apply_barrier(
            hi(),
            ["b", "a"],
            [
                NodePartial(messages=[msg("b1"), msg("b2")]),
                NodePartial(messages=[msg("a1")]),
            ],
        )
        assert [m.content for m in out.state.messages] == ["hi", "b1", "b2", "a1"]

    def test_later_nodes_overwrite_earlier_extra(self) -> None:
        state = VersionedState(extra={"k": 0, "keep": True})
        out = apply_barrier(
            state,
            ["a", "b"],
            [NodePartial(extra={"k": 1, "x": 1}), NodePartial(extra={"k": 2})],
        )
        assert dict(out.state.extra) == {"k": 2, "x": 1, "keep": True}

    def test_later_delete_wins(self) -> None:
        out = apply_barrier(
            VersionedState(extra={"k": 0}),
            ["a", "b"],
            [NodePartial(extra={"k": 1}), NodePartial(extra={"k": None})],
        )
        assert "k" not in out.state.extra
        assert out.updated_channels == ("extra",)

    def test_later_write_beats_earlier_delete(self) -> None:
        out = apply_barrier(
            VersionedState(extra={"k": 0}),
            ["a", "b"],
            [NodePartial(extra={"k": None}), NodePartial(extra={"k": 2})],
        )
        assert out.state.extra["k"] == 2

    def test_set_then_delete_of_a_new_key_changes_nothing(self) -> None:
        state = VersionedState(extra={"other": 1})
        out = apply_barrier(
            state,
            ["a", "b"],
            [NodePartial(extra={"k": 1}), NodePartial(extra={"k": None})],
        )
        assert dict(out.state.extra) == {"other": 1}
        assert out.updated_channels == ()
        assert out.state.versions == state.versions

    def test_none_and_empty_partials_change_nothing(self) -> None:
        state = hi()
        out = apply_barrier(
            state,
            ["a", "b", "c", "d"],
            [None, NodePartial(), NodePartial(messages=[], extra={}, errors=[]), None],
        )
        assert out == BarrierOutcome(state=state)
        assert out.state == state
        assert out.state.versions == Versions()

    def test_no_partials(self) -> None:
        state = hi()
        out = apply_barrier(state, [], [])
        assert out.state == state
        assert out.updated_channels == ()

    def test_single_partial_equals_padded_list(self) -> None:
        partial = NodePartial(
            messages=[msg("x")],
            extra={"k": 1, "gone": None},
            errors=[ErrorEvent.app("b", when=at(1)), ErrorEvent.app("a", when=at(1))],
            frontier=Replace(["x"]),
        )
        state = VersionedState(messages=[Message.user("u")], extra={"gone": 1})
        one = apply_barrier(state, ["n"], [partial])
        two = apply_barrier(state, ["n", "m"], [partial, None])
        assert one == two
        assert [e.error.message for e in one.errors] == ["a", "b"]

    def test_state_is_a_new_object_and_input_untouched(self) -> None:
        state = VersionedState(messages=[Message.user("u")], extra={"k": 1})
        out = apply_barrier(
            state, ["a"], [NodePartial(messages=[msg("m")], extra={"k": 2})]
        )
        assert state.messages == [Message.user("u")]
        assert dict(state.extra) == {"k": 1}
        assert state.versions == Versions()
        assert out.state is not state


class TestBarrierVersions:
    def test_messages_bump_when_length_changes(self) -> None:
        out = apply_barrier(hi(), ["a"], [NodePartial(messages=[msg("x")])])
        assert out.state.versions == Versions(messages=2, extra=1, errors=1)
        assert out.updated_channels == ("messages",)

    def test_messages_bump_once_per_barrier(self) -> None:
        out = apply_barrier(
            hi(),
            ["a", "b", "c"],
            [NodePartial(messages=[msg("x"), msg("y")])] * 3,
        )
        assert len(out.state.messages) == 7
        assert out.state.versions.messages == 2

    def test_extra_bumps_when_content_changes(self) -> None:
        out = apply_barrier(hi(), ["a"], [NodePartial(extra={"k": 1})])
        assert out.state.versions == Versions(messages=1, extra=2, errors=1)
        assert out.updated_channels == ("extra",)

    def test_identical_extra_value_does_not_bump(self) -> None:
        state = VersionedState(extra={"k": [1, {"x": 2}]})
        out = apply_barrier(state, ["a"], [NodePartial(extra={"k": [1, {"x": 2}]})])
        assert out.state.versions == Versions()
        assert out.updated_channels == ()

    def test_deleting_an_absent_key_does_not_bump(self) -> None:
        out = apply_barrier(hi(), ["a"], [NodePartial(extra={"nope": None})])
        assert out.state.versions == Versions()
        assert out.updated_channels == ()

    def test_deleting_a_present_key_bumps(self) -> None:
        out = apply_barrier(
            VersionedState(extra={"k": 1}), ["a"], [NodePartial(extra={"k": None})]
        )
        assert out.state.versions.extra == 2
        assert dict(out.state.extra) == {}

    def test_both_channels_listed_messages_first(self) -> None:
        out = apply_barrier(
            hi(),
            ["a", "b"],
            [NodePartial(extra={"k": 1}), NodePartial(messages=[msg("m")])],
        )
        assert out.updated_channels == ("messages", "extra")
        assert out.state.versions == Versions(messages=2, extra=2, errors=1)

    def test_errors_never_bump(self) -> None:
        state = VersionedState(versions=Versions(messages=4, extra=6, errors=3))
        out = apply_barrier(state, ["a"], [NodePartial(errors=[ErrorEvent.app("x")])])
        assert len(out.state.errors) == 1
        assert out.state.versions == Versions(messages=4, extra=6, errors=3)
        assert out.updated_channels == ()

    def test_bump_by_exactly_one_from_any_version(self) -> None:
        state = VersionedState(versions=Versions(messages=41, extra=7, errors=2))
        out = apply_barrier(
            state, ["a"], [NodePartial(messages=[msg("m")], extra={"k": 1})]
        )
        assert out.state.versions == Versions(messages=42, extra=8, errors=2)

    def test_same_length_rewrite_does_not_bump_messages(self) -> None:
        def rewrite_last(current: Any, update: Any) -> list[Message]:
            items = list(current)
            return [*items[: -len(update)], *update]

        registry = registry_with(("messages", rewrite_last, True))
        out = apply_barrier(
            hi(), ["a"], [NodePartial(messages=[msg("edited")])], registry
        )
        assert out.state.messages == [msg("edited")]
        assert out.state.versions.messages == 1
        assert out.updated_channels == ()


class TestBarrierErrors:
    def test_errors_sorted_by_scope_name_step_time_message(self) -> None:
        def node(name: str, step: int, when: int, text: str) -> ErrorEvent:
            return ErrorEvent.node(name, step, text, when=at(when))

        expected = [
            node("a", 1, 0, "z"),
            node("a", 1, 5, "a"),
            node("a", 1, 5, "b"),
            node("a", 2, 0, "a"),
            node("b", 0, 0, "a"),
            ErrorEvent.scheduler(1, "s", when=at(9)),
            ErrorEvent.scheduler(2, "s", when=at(0)),
            ErrorEvent.runner("s1", 5, "r", when=at(0)),
            ErrorEvent.runner("s2", 1, "r", when=at(0)),
            ErrorEvent.app("a", when=at(0)),
            ErrorEvent.app("b", when=at(0)),
            ErrorEvent.app("a", when=at(1)),
        ]
        shuffled = [expected[i] for i in (11, 3, 7, 0, 9, 5, 1, 10, 6, 2, 8, 4)]
        partial_list: list[NodePartial | None] = [
            NodePartial(errors=shuffled[:4]),
            NodePartial(errors=shuffled[4:9]),
            NodePartial(errors=shuffled[9:]),
        ]
        state = VersionedState(errors=[ErrorEvent.app("old", when=at(99))])
        out = apply_barrier(state, ["x", "y", "z"], partial_list)
        assert list(out.errors) == expected
        assert list(out.state.errors) == [state.errors[0], *expected]

    def test_errors_of_one_partial_are_sorted_too(self) -> None:
        late, early = ErrorEvent.app("x", when=at(2)), ErrorEvent.app("x", when=at(1))
        out = apply_barrier(hi(), ["a"], [NodePartial(errors=[late, early])])
        assert out.errors == (early, late)

    def test_sort_is_stable_for_identical_keys(self) -> None:
        one = ErrorEvent.app("same", when=at(0), tags=["first"])
        two = ErrorEvent.app("same", when=at(0), tags=["second"])
        out = apply_barrier(
            hi(), ["a", "b"], [NodePartial(errors=[one]), NodePartial(errors=[two])]
        )
        assert [e.tags for e in out.errors] == [("first",), ("second",)]

    def test_scope_sort_keys(self) -> None:
        assert ErrorScope.for_node("n", 3).sort_key() == (0, "n", 3)
        assert ErrorScope.for_scheduler(2).sort_key() == (1, "", 2)
        assert ErrorScope.for_runner("s", 4).sort_key() == (2, "s", 4)
        assert ErrorScope.for_app().sort_key() == (3, "", 0)


class TestBarrierCommands:
    def test_commands_recorded_with_origin_in_frontier_order(self) -> None:
        out = apply_barrier(
            hi(),
            ["c", "a", "b"],
            [
                NodePartial(frontier=Append(["x"])),
                NodePartial(messages=[msg("m")]),
                NodePartial(frontier=Replace([])),
            ],
        )
        assert out.frontier_commands == (("c", Append(["x"])), ("b", Replace([])))

    def test_commands_do_not_touch_state(self) -> None:
        state = hi()
        out = apply_barrier(state, ["a"], [NodePartial(frontier=Replace(["b"]))])
        assert out.state == state
        assert out.updated_channels == ()
        assert out.frontier_commands == (("a", Replace(["b"])),)

    def test_origin_placeholder_when_ids_run_out(self) -> None:
        out = apply_barrier(
            hi(),
            ["a"],
            [NodePartial(), NodePartial(frontier=Append(["x"]))],
        )
        assert out.frontier_commands == (("?", Append(["x"])),)
        assert apply_barrier(
            hi(), [], [NodePartial(frontier=Append(["x"]))]
        ).frontier_commands == (("?", Append(["x"])),)


class TestCustomReducers:
    def test_run_in_registration_order_after_builtin(self) -> None:
        calls: list[tuple[str, int, tuple[str, ...]]] = []

        def first(current: Any, update: Any) -> Any:
            calls.append(("first", len(current), tuple(m.content for m in update)))
            return [*list(current), msg("first")]

        def second(current: Any, update: Any) -> Any:
            calls.append(("second", len(current), tuple(m.content for m in update)))
            return [*current, msg("second")]

        registry = registry_with(
            ("messages", first, False), ("messages", second, False)
        )
        out = apply_barrier(
            hi(),
            ["a", "b"],
            [NodePartial(messages=[msg("a")]), NodePartial(messages=[msg("b")])],
            registry,
        )
        # Each reducer runs once per barrier, on the merged update.
        assert calls == [("first", 3, ("a", "b")), ("second", 4, ("a", "b"))]
        assert [m.content for m in out.state.messages] == [
            "hi",
            "a",
            "b",
            "first",
            "second",
        ]
        assert isinstance(out.state.messages, History)
        assert out.state.versions.messages == 2

    def test_replace_removes_builtin(self) -> None:
        def keep_last_two(current: Any, update: Any) -> list[Message]:
            return [*current, *update][-2:]

        registry = registry_with(("messages", keep_last_two, True))
        state = VersionedState.with_messages([msg("1"), msg("2")])
        out = apply_barrier(
            state,
            ["a"],
            [NodePartial(messages=[msg("3"), msg("4"), msg("5")])],
            registry,
        )
        assert [m.content for m in out.state.messages] == ["4", "5"]
        assert out.state.versions.messages == 1  # same length: no bump

    def test_extra_reducer_sees_every_partial_in_frontier_order(self) -> None:
        seen: list[tuple[dict[str, Any], dict[str, Any]]] = []

        def counting(current: Mapping[str, Any], update: Mapping[str, Any]) -> Any:
            seen.append((dict(current), dict(update)))
            return {**current, "merges": current.get("merges", 0) + 1}

        registry = registry_with(("extra", counting, False))
        out = apply_barrier(
            VersionedState(extra={"k": 0}),
            ["a", "b", "c"],
            [
                NodePartial(extra={"k": 1, "d": None}),
                NodePartial(messages=[msg("no extra")]),
                NodePartial(extra={"k": 2}),
            ],
            registry,
        )
        # map_merge, then counting, once per partial that writes extra; each
        # sees the result of the partials before it.
        assert seen == [
            ({"k": 1}, {"k": 1, "d": None}),
            ({"k": 2, "merges": 1}, {"k": 2}),
        ]
        assert dict(out.state.extra) == {"k": 2, "merges": 2}
        with pytest.raises(TypeError):
            out.state.extra["k"] = 0  # type: ignore[index]

    def test_replacing_extra_reducer_keeps_every_parallel_write(self) -> None:
        # The case that lost a write when the reducer saw the merged update.
        def collect(current: Mapping[str, Any], update: Mapping[str, Any]) -> Any:
            return {"log": [*current.get("log", []), *update["log"]]}

        registry = registry_with(("extra", collect, True))
        out = apply_barrier(
            VersionedState(extra={"log": ["start"]}),
            ["a", "b", "c"],
            [NodePartial(extra={"log": [n]}) for n in "abc"],
            registry,
        )
        assert out.state.extra["log"] == ["start", "a", "b", "c"]
        assert out.conflicts == ()  # map_merge is not in charge: no last write

    def test_reducers_only_run_for_channels_with_data(self) -> None:
        calls: list[str] = []

        def spy(current: Any, update: Any) -> Any:
            calls.append("called")
            return current

        registry = registry_with(("errors", spy, False), ("extra", spy, False))
        apply_barrier(hi(), ["a"], [NodePartial(messages=[msg("m")])], registry)
        assert calls == []

    def test_errors_reducer(self) -> None:
        def tag_all(current: Any, update: Any) -> Any:
            return [e.with_tag("seen") for e in current]

        registry = registry_with(("errors", tag_all, False))
        out = apply_barrier(
            hi(), ["a"], [NodePartial(errors=[ErrorEvent.app("x")])], registry
        )
        assert [e.tags for e in out.state.errors] == [("seen",)]
        assert out.state.versions.errors == 1


class TestReducerErrors:
    def test_raising_reducer(self) -> None:
        def broken(current: Any, update: Any) -> Any:
            raise KeyError("nope")

        registry = registry_with(("messages", broken, False))
        with pytest.raises(ReducerError, match=r"broken.*'messages'.*KeyError") as info:
            apply_barrier(hi(), ["a"], [NodePartial(messages=[msg("m")])], registry)
        assert isinstance(info.value.__cause__, KeyError)
        assert isinstance(info.value, WeavegraphError)

    @pytest.mark.parametrize(
        ("channel", "partial", "bad"),
        [
            ("messages", NodePartial(messages=[msg("m")]), None),
            ("messages", NodePartial(messages=[msg("m")]), "text"),
            ("messages", NodePartial(messages=[msg("m")]), [1, 2]),
            ("extra", NodePartial(extra={"k": 1}), ["k"]),
            ("extra", NodePartial(extra={"k": 1}), None),
            ("extra", NodePartial(extra={"k": 1}), {1: "x"}),
            ("errors", NodePartial(errors=[ErrorEvent.app("e")]), [msg("m")]),
            ("errors", NodePartial(errors=[ErrorEvent.app("e")]), 5),
        ],
        ids=repr,
    )
    def test_wrong_return_type(
        self, channel: str, partial: NodePartial, bad: Any
    ) -> None:
        def returns_bad(current: Any, update: Any) -> Any:
            return bad

        registry = registry_with((channel, returns_bad, False))
        with pytest.raises(ReducerError, match=f"'{channel}'"):
            apply_barrier(hi(), ["a"], [partial], registry)

    def test_state_untouched_after_reducer_error(self) -> None:
        def broken(current: Any, update: Any) -> Any:
            raise ValueError("x")

        state = hi()
        registry = registry_with(("extra", broken, False))
        with pytest.raises(ReducerError):
            apply_barrier(
                state,
                ["a"],
                [NodePartial(messages=[msg("m")], extra={"k": 1})],
                registry,
            )
        assert state.messages == [Message.user("hi")]
        assert dict(state.extra) == {}


# ------------------------------------------------------------- property tests


def scope_key(event: ErrorEvent) -> tuple[Any, ...]:
    scope = event.scope
    rank = ["node", "scheduler", "runner", "app"].index(scope.scope)
    name = {"node": scope.node, "runner": scope.session}.get(scope.scope) or ""
    return (rank, name, scope.step or 0, event.when, event.error.message)


def model_barrier(
    state: VersionedState, ran: Sequence[str], outputs: Sequence[NodePartial | None]
) -> tuple[list[Message], dict[str, Any], list[ErrorEvent], Versions, tuple, list]:
    """An independent model of the barrier: sequential merges, then versions."""
    messages = list(state.messages)
    extra: Mapping[str, Any] = dict(state.extra)
    errors: list[ErrorEvent] = []
    commands = []
    for name, partial in zip(ran, outputs, strict=True):
        if partial is None:
            continue
        messages += partial.messages or ()
        extra = reference_merge(extra, partial.extra or {})
        errors += partial.errors or ()
        if partial.frontier is not None:
            commands.append((name, partial.frontier))
    errors.sort(key=scope_key)
    bumped = []
    versions = state.versions
    if len(messages) != len(state.messages):
        bumped.append("messages")
    if dict(extra) != dict(state.extra):
        bumped.append("extra")
    versions = Versions(
        messages=versions.messages + ("messages" in bumped),
        extra=versions.extra + ("extra" in bumped),
        errors=versions.errors,
    )
    return messages, dict(extra), errors, versions, tuple(bumped), commands


@settings(max_examples=150, deadline=None)
@given(states(), frontier_runs())
def test_barrier_matches_model_whatever_the_completion_order(
    state: VersionedState,
    run: tuple[list[str], list[NodePartial | None], list[int]],
) -> None:
    ran, outputs, completion = run
    # Nodes finish in ``completion`` order; the engine files each output under
    # its node and hands the barrier the outputs in frontier order.
    finished: dict[str, NodePartial | None] = {}
    for index in completion:
        finished[ran[index]] = outputs[index]
    reordered = [finished[name] for name in ran]
    direct = apply_barrier(state, ran, outputs)
    via_completion = apply_barrier(state, ran, reordered)
    assert via_completion == direct
    assert apply_barrier(state, ran, outputs) == direct  # repeatable

    messages, extra, errors, versions, bumped, commands = model_barrier(
        state, ran, outputs
    )
    assert list(direct.state.messages) == messages
    assert dict(direct.state.extra) == extra
    assert list(direct.state.errors) == [*state.errors, *errors]
    assert list(direct.errors) == errors
    assert direct.state.versions == versions
    assert direct.updated_channels == bumped
    assert list(direct.frontier_commands) == commands
    # The input state is never modified.
    assert state == VersionedState(
        messages=list(state.messages),
        extra=dict(state.extra),
        errors=list(state.errors),
        versions=state.versions,
    )


@settings(max_examples=100, deadline=None)
@given(states(), st.lists(partials(), min_size=1, max_size=4))
def test_one_barrier_per_partial_reaches_the_same_content(
    state: VersionedState, outputs: list[NodePartial | None]
) -> None:
    # Content (not versions: those bump once per barrier) is associative.
    together = apply_barrier(state, [f"n{i}" for i in range(len(outputs))], outputs)
    step_by_step = state
    for i, partial in enumerate(outputs):
        step_by_step = apply_barrier(step_by_step, [f"n{i}"], [partial]).state
    assert step_by_step.messages == together.state.messages
    assert dict(step_by_step.extra) == dict(together.state.extra)
    assert sorted(map(scope_key, step_by_step.errors)) == sorted(
        map(scope_key, together.state.errors)
    )
    assert step_by_step.versions.messages >= together.state.versions.messages
    assert step_by_step.versions.errors == together.state.versions.errors


def test_weave_error_in_partial_round_trip() -> None:
    error = ErrorEvent.node("n", 1, ErrorDetail(message="m", details={"k": 1}))
    out = apply_barrier(hi(), ["n"], [NodePartial(errors=[error])])
    assert out.state.errors[0] is error


# ----------------------------------------------------------------- key reducers


def keyed(*pairs: tuple[str, Any]) -> ReducerRegistry:
    """A compiled graph's registry with ``(key, reducer)`` key reducers."""
    builder = GraphBuilder().add_edge(START, END)
    for key, reducer in pairs:
        builder.with_key_reducer(key, reducer)
    return builder.compile().graph.reducers


class TestBuiltinKeyReducers:
    def test_append(self) -> None:
        assert reducers.append([1, 2], [3]) == [1, 2, 3]
        assert reducers.append([1], (2, 3)) == [1, 2, 3]
        assert reducers.append((1,), [2]) == (1, 2)

    @pytest.mark.parametrize(
        ("current", "value"), [([1], 2), ("ab", ["c"]), ([1], "c"), ({1}, [2])]
    )
    def test_append_needs_lists(self, current: Any, value: Any) -> None:
        with pytest.raises(TypeError, match=r"append joins lists.*\[item\]"):
            reducers.append(current, value)

    def test_add(self) -> None:
        assert reducers.add(1, 2) == 3
        assert reducers.add(1.5, 1) == 2.5
        assert reducers.add(Decimal("1.1"), Decimal("2.2")) == Decimal("3.3")

    @pytest.mark.parametrize(
        ("current", "value"), [(1, True), (False, 1), ("1", 2), (1, None), ([1], [2])]
    )
    def test_add_needs_numbers(self, current: Any, value: Any) -> None:
        with pytest.raises(TypeError, match="add sums numbers"):
            reducers.add(current, value)

    def test_merge(self) -> None:
        current = {"a": 1, "b": 2}
        assert reducers.merge(current, {"b": 3, "c": None}) == {
            "a": 1,
            "b": 3,
            "c": None,
        }
        assert current == {"a": 1, "b": 2}

    def test_merge_needs_dicts(self) -> None:
        with pytest.raises(TypeError, match="merge combines dicts"):
            reducers.merge({"a": 1}, [("b", 2)])

    def test_replace(self) -> None:
        assert reducers.replace([1], "x") == "x"

    def test_public_module_lists_its_names(self) -> None:
        public = {
            name
            for name, value in vars(reducers).items()
            if not name.startswith("_")
            and name != "annotations"
            and not isinstance(value, types.ModuleType)
        }
        assert set(reducers.__all__) == public
        assert reducers.add_messages is add_messages
        assert reducers.map_merge is map_merge
        assert reducers.add_errors is add_errors


class TestKeyReducersAtTheBarrier:
    def test_three_parallel_writers_keep_all_facts(self) -> None:
        out = apply_barrier(
            VersionedState(),
            ["search", "lookup", "browse"],
            [
                NodePartial(extra={"facts": ["s1", "s2"]}),
                NodePartial(extra={"facts": ["l1"]}),
                NodePartial(extra={"facts": ["b1"]}),
            ],
            keyed(("facts", "append")),
        )
        # The first write of an absent key is stored as is, then folded.
        assert out.state.extra["facts"] == ["s1", "s2", "l1", "b1"]
        assert out.state.versions.extra == 2
        assert out.conflicts == ()

    def test_a_counter_written_by_two_nodes_adds_both(self) -> None:
        registry = keyed(("count", "add"))
        state = VersionedState(extra={"count": 10})
        out = apply_barrier(
            state,
            ["a", "b"],
            [NodePartial(extra={"count": 1}), NodePartial(extra={"count": 2})],
            registry,
        )
        assert out.state.extra["count"] == 13
        again = apply_barrier(
            out.state, ["a"], [NodePartial(extra={"count": 5})], registry
        )
        assert again.state.extra["count"] == 18

    def test_merge_folds_dicts_across_steps(self) -> None:
        registry = keyed(("profile", "merge"))
        out = apply_barrier(
            VersionedState(extra={"profile": {"name": "Ada"}}),
            ["a", "b"],
            [
                NodePartial(extra={"profile": {"lang": "en"}}),
                NodePartial(extra={"profile": {"name": "Ada L."}}),
            ],
            registry,
        )
        assert out.state.extra["profile"] == {"name": "Ada L.", "lang": "en"}

    def test_frontier_order_whatever_the_completion_order(self) -> None:
        registry = keyed(("log", "append"))
        parts = [NodePartial(extra={"log": [n]}) for n in "cab"]
        out = apply_barrier(VersionedState(), ["c", "a", "b"], parts, registry)
        assert out.state.extra["log"] == ["c", "a", "b"]

    def test_none_deletes_a_keyed_key(self) -> None:
        registry = keyed(("log", "append"))
        out = apply_barrier(
            VersionedState(extra={"log": ["x"]}),
            ["a", "b"],
            [NodePartial(extra={"log": None}), NodePartial(extra={"log": ["y"]})],
            registry,
        )
        # Deleted by "a", so "b"'s write is the first of an absent key.
        assert out.state.extra["log"] == ["y"]
        gone = apply_barrier(
            out.state, ["a"], [NodePartial(extra={"log": None})], registry
        )
        assert "log" not in gone.state.extra

    def test_plain_keys_beside_keyed_ones(self) -> None:
        out = apply_barrier(
            VersionedState(extra={"facts": ["f0"], "status": "new"}),
            ["a", "b"],
            [
                NodePartial(extra={"facts": ["f1"], "status": "busy"}),
                NodePartial(extra={"facts": ["f2"]}),
            ],
            keyed(("facts", "append")),
        )
        assert dict(out.state.extra) == {"facts": ["f0", "f1", "f2"], "status": "busy"}

    def test_custom_key_reducer(self) -> None:
        calls: list[tuple[Any, Any]] = []

        def longest(current: Any, value: Any) -> Any:
            calls.append((current, value))
            return max(current, value, key=len)

        out = apply_barrier(
            VersionedState(),
            ["a", "b", "c"],
            [NodePartial(extra={"best": w}) for w in ("ab", "abcd", "abc")],
            keyed(("best", longest)),
        )
        assert calls == [("ab", "abcd"), ("abcd", "abc")]
        assert out.state.extra["best"] == "abcd"

    def test_key_reducer_returning_none_deletes(self) -> None:
        out = apply_barrier(
            VersionedState(extra={"k": 1}),
            ["a"],
            [NodePartial(extra={"k": 2})],
            keyed(("k", lambda current, value: None)),
        )
        assert "k" not in out.state.extra

    def test_unchanged_fold_does_not_bump(self) -> None:
        state = VersionedState(extra={"k": [1]})
        out = apply_barrier(
            state, ["a"], [NodePartial(extra={"k": []})], keyed(("k", "append"))
        )
        assert out.state.extra["k"] == [1]
        assert out.state.versions == state.versions
        assert out.updated_channels == ()

    def test_a_raising_key_reducer_names_key_and_node(self) -> None:
        with pytest.raises(ReducerError) as info:
            apply_barrier(
                VersionedState(extra={"count": "many"}),
                ["tally"],
                [NodePartial(extra={"count": 1})],
                keyed(("count", "add")),
            )
        text = str(info.value)
        assert 'extra["count"]' in text
        assert "'tally'" in text
        assert "StateError" in text
        assert isinstance(info.value.__cause__, TypeError)

    def test_a_custom_key_reducer_must_return_storable_values(self) -> None:
        with pytest.raises(ReducerError, match=r'extra\["k"\]\[0\].*object'):
            apply_barrier(
                VersionedState(extra={"k": [1]}),
                ["a"],
                [NodePartial(extra={"k": [2]})],
                keyed(("k", lambda current, value: [object()])),
            )

    def test_key_reducers_with_custom_channel_reducers(self) -> None:
        seen: list[dict[str, Any]] = []

        def spy(current: Mapping[str, Any], update: Mapping[str, Any]) -> Any:
            seen.append(dict(update))
            return current

        builder = GraphBuilder().add_edge(START, END).with_reducer("extra", spy)
        registry = builder.with_key_reducer("n", "add").compile().graph.reducers
        out = apply_barrier(
            VersionedState(extra={"n": 1}),
            ["a", "b"],
            [NodePartial(extra={"n": 2, "x": 1}), NodePartial(extra={"n": 3})],
            registry,
        )
        # Channel reducers see each partial with its keyed values already folded.
        assert seen == [{"n": 3, "x": 1}, {"n": 6}]
        assert dict(out.state.extra) == {"n": 6, "x": 1}

    def test_registry_signature_lists_key_reducers_sorted(self) -> None:
        registry = ReducerRegistry().with_key_reducer("z", "add")
        registry = registry.with_key_reducer("a", "append")
        assert registry.signature()[-2:] == [
            'key:"a":weavegraph._core.reducers.append',
            'key:"z":weavegraph._core.reducers.add',
        ]
        assert ReducerRegistry().with_key_reducer("a", "add").by_channel == (
            ReducerRegistry().by_channel
        )


# -------------------------------------------------------------------- conflicts


class TestConflicts:
    def test_same_plain_key_last_write_wins_and_is_reported(self) -> None:
        out = apply_barrier(
            VersionedState(),
            ["a", "b", "c"],
            [
                NodePartial(extra={"answer": 1, "only_a": True}),
                NodePartial(extra={"other": 0}),
                NodePartial(extra={"answer": 2}),
            ],
        )
        assert out.state.extra["answer"] == 2
        assert out.conflicts == (KeyConflict("answer", ("a", "c")),)
        conflict = out.conflicts[0]
        assert conflict.winner == "c"
        text = conflict.describe()
        assert 'extra["answer"]' in text
        assert "'a', 'c'" in text
        assert "with_key_reducer" in text

    def test_every_writer_in_frontier_order(self) -> None:
        out = apply_barrier(
            VersionedState(),
            ["x", "y", "z"],
            [NodePartial(extra={"k": n, "j": n}) for n in (1, 2, 3)],
        )
        assert out.conflicts == (
            KeyConflict("k", ("x", "y", "z")),
            KeyConflict("j", ("x", "y", "z")),
        )

    def test_equal_writes_lose_nothing(self) -> None:
        out = apply_barrier(
            VersionedState(),
            ["a", "b"],
            [NodePartial(extra={"status": "done"})] * 2,
        )
        assert out.conflicts == ()

    def test_values_of_different_types_differ(self) -> None:
        out = apply_barrier(
            VersionedState(),
            ["a", "b"],
            [NodePartial(extra={"n": 1}), NodePartial(extra={"n": 1.0})],
        )
        assert out.conflicts == (KeyConflict("n", ("a", "b")),)

    def test_a_delete_and_a_write_conflict(self) -> None:
        out = apply_barrier(
            VersionedState(extra={"k": 0}),
            ["a", "b"],
            [NodePartial(extra={"k": None}), NodePartial(extra={"k": 5})],
        )
        assert out.conflicts == (KeyConflict("k", ("a", "b")),)

    def test_keyed_keys_never_conflict(self) -> None:
        out = apply_barrier(
            VersionedState(),
            ["a", "b"],
            [NodePartial(extra={"k": [1]}), NodePartial(extra={"k": [2]})],
            keyed(("k", "replace")),
        )
        assert out.state.extra["k"] == [2]
        assert out.conflicts == ()

    def test_one_writer_never_conflicts(self) -> None:
        out = apply_barrier(VersionedState(), ["a"], [NodePartial(extra={"k": 1})])
        assert out.conflicts == ()

    def test_reported_with_an_added_channel_reducer(self) -> None:
        registry = registry_with(("extra", lambda current, update: current, False))
        out = apply_barrier(
            VersionedState(),
            ["a", "b"],
            [NodePartial(extra={"k": 1}), NodePartial(extra={"k": 2})],
            registry,
        )
        assert out.conflicts == (KeyConflict("k", ("a", "b")),)


# ------------------------------------------------------- the storable domain


@attrs.frozen
class Unregistered:
    when: dt.datetime


class TestUnstorableWrites:
    def test_refused_naming_node_and_key_path(self) -> None:
        tools = [{"name": "a"}, {"name": "b"}, {"name": "c", "when": object()}]
        with pytest.raises(StateError) as info:
            apply_barrier(
                hi(),
                ["planner", "search"],
                [
                    NodePartial(extra={"ok": 1}),
                    NodePartial(extra={"fine": (1, 2), "tools": tools}),
                ],
            )
        text = str(info.value)
        assert "'search'" in text
        assert 'extra["tools"][2]["when"]' in text
        assert "object" in text

    def test_unregistered_attrs_class_names_the_fix(self) -> None:
        value = Unregistered(when=T0)
        with pytest.raises(StateError, match=r"register_type\(Unregistered\)"):
            apply_barrier(hi(), ["n"], [NodePartial(extra={"u": value})])

    def test_nothing_is_merged_when_refused(self) -> None:
        state = VersionedState(extra={"k": 1})
        with pytest.raises(StateError):
            apply_barrier(
                state,
                ["a", "b"],
                [NodePartial(extra={"k": 2}), NodePartial(extra={"bad": {1j}})],
            )
        assert dict(state.extra) == {"k": 1}

    def test_domain_values_pass(self) -> None:
        value = {
            "t": (1, "x"),
            "s": {1, 2},
            "b": b"\x00",
            "when": T0,
            "d": Decimal("1.10"),
            "nan": float("nan"),
        }
        out = apply_barrier(hi(), ["n"], [NodePartial(extra=value)])
        assert out.state.extra["t"] == (1, "x")

    def test_error_contexts_are_checked_too(self) -> None:
        event = ErrorEvent.node("n", 1, "bad", context={"obj": object()})
        with pytest.raises(StateError, match=r"'n'.*errors\[0\]\.context\[\"obj\"\]"):
            apply_barrier(hi(), ["n"], [NodePartial(errors=[event])])
        detail = ErrorDetail(
            message="outer", cause=ErrorDetail(message="inner", details=[{1j}])
        )
        nested = ErrorEvent.node("n", 1, detail)
        with pytest.raises(StateError, match=r"errors\[1\]\.error\.cause\.details"):
            apply_barrier(
                hi(), ["n"], [NodePartial(errors=[ErrorEvent.app("x"), nested])]
            )
