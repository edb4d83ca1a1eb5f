"""Built-in reducers, the reducer registry and the superstep barrier."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

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
    StateSnapshot,
    VersionedState,
    WeavegraphError,
    add_errors,
    add_messages,
    map_merge,
)
from weavegraph._core.reducers import ReducerRegistry
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

    def test_extra_reducer_sees_merged_update(self) -> None:
        seen: list[dict[str, Any]] = []

        def counting(current: Mapping[str, Any], update: Mapping[str, Any]) -> Any:
            seen.append(dict(update))
            return {**current, "merges": current.get("merges", 0) + 1}

        registry = registry_with(("extra", counting, False))
        out = apply_barrier(
            VersionedState(extra={"k": 0}),
            ["a", "b"],
            [NodePartial(extra={"k": 1, "d": None}), NodePartial(extra={"k": 2})],
            registry,
        )
        assert seen == [{"k": 2, "d": None}]
        assert dict(out.state.extra) == {"k": 2, "merges": 1}
        with pytest.raises(TypeError):
            out.state.extra["k"] = 0  # type: ignore[index]

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
