"""Messages, History, VersionedState, snapshots, NodePartial and frontier commands."""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from strategies import history_programs

from weavegraph import (
    Append,
    ErrorEvent,
    Message,
    NodePartial,
    Replace,
    Role,
    StateError,
    StateSnapshot,
    VersionedState,
    WeavegraphError,
)
from weavegraph.lowlevel import History, Versions, apply_barrier

# --------------------------------------------------------------------- messages


class TestMessage:
    @pytest.mark.parametrize(
        ("helper", "role"),
        [
            (Message.user, Role.USER),
            (Message.assistant, Role.ASSISTANT),
            (Message.system, Role.SYSTEM),
            (Message.tool, Role.TOOL),
        ],
    )
    def test_helpers(self, helper: Any, role: Role) -> None:
        message = helper("text")
        assert message.role is role
        assert message.content == "text"
        assert message == Message(role.value, "text")

    @pytest.mark.parametrize("name", ["user", "assistant", "system", "tool"])
    def test_known_role_strings_become_role(self, name: str) -> None:
        message = Message(name, "x")
        assert isinstance(message.role, Role)
        assert message.role == name

    def test_custom_roles_stay_strings(self) -> None:
        message = Message("critic", "looks fine")
        assert message.role == "critic"
        assert type(message.role) is str
        assert not isinstance(message.role, Role)

    def test_roles_are_case_sensitive(self) -> None:
        assert type(Message("User", "x").role) is str

    def test_role_values(self) -> None:
        assert [r.value for r in Role] == ["user", "assistant", "system", "tool"]
        assert Role.USER == "user"

    @pytest.mark.parametrize("role", ["", None, 1, b"user", ["user"]], ids=repr)
    def test_bad_role(self, role: Any) -> None:
        with pytest.raises(StateError, match="role"):
            Message(role, "hi")

    @pytest.mark.parametrize("content", [None, 1, b"hi", ["hi"], {"a": 1}], ids=repr)
    def test_bad_content(self, content: Any) -> None:
        with pytest.raises(StateError, match="content must be a string"):
            Message("user", content)

    @pytest.mark.parametrize("helper", [Message.user, Message.tool])
    def test_bad_content_through_helpers(self, helper: Any) -> None:
        with pytest.raises(StateError):
            helper(42)

    def test_empty_content_is_fine(self) -> None:
        assert Message.user("").content == ""

    def test_state_error_is_a_type_error_and_weavegraph_error(self) -> None:
        with pytest.raises(TypeError):
            Message("user", 3)
        assert issubclass(StateError, WeavegraphError)

    def test_frozen_and_hashable(self) -> None:
        message = Message.user("a")
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            message.content = "b"  # type: ignore[misc]
        assert len({message, Message("user", "a")}) == 1


# ---------------------------------------------------------------------- history


class TestHistory:
    def test_sequence_basics(self) -> None:
        h = History(["a", "b", "c"])
        assert len(h) == 3
        assert h[0] == "a"
        assert h[2] == "c"
        assert h[-1] == "c"
        assert h[-3] == "a"
        assert list(h) == ["a", "b", "c"]
        assert list(reversed(h)) == ["c", "b", "a"]
        assert "b" in h
        assert "z" not in h
        assert h.index("c") == 2
        assert h.count("a") == 1
        assert isinstance(h, Sequence)

    @pytest.mark.parametrize("index", [3, -4, 100])
    def test_index_out_of_range(self, index: int) -> None:
        with pytest.raises(IndexError):
            History(["a", "b", "c"])[index]

    def test_slices_are_tuples(self) -> None:
        h = History([1, 2, 3, 4])
        assert h[1:3] == (2, 3)
        assert h[::-1] == (4, 3, 2, 1)
        assert h[-2:] == (3, 4)
        assert h[10:] == ()

    def test_empty(self) -> None:
        h: History[int] = History()
        assert len(h) == 0
        assert not h
        assert list(h) == []
        assert h == []
        assert repr(h) == "History([])"

    def test_equality(self) -> None:
        h = History([1, 2])
        assert h == [1, 2]
        assert h == (1, 2)
        assert h == [1, 2]
        assert h == (1, 2)
        assert h == History([1, 2])
        assert h != [1, 2, 3]
        assert h != [2, 1]
        assert h != "12"
        assert h != {1, 2}

    def test_hash_matches_tuple(self) -> None:
        assert hash(History([1, 2])) == hash((1, 2))
        assert len({History([1]), History([1])}) == 1

    def test_repr(self) -> None:
        assert repr(History(["x", 1])) == "History(['x', 1])"

    def test_constructor_copies(self) -> None:
        items = [1, 2]
        h = History(items)
        items.append(3)
        assert h == [1, 2]

    def test_to_list_is_a_copy(self) -> None:
        h = History([1, 2])
        out = h.to_list()
        out.append(3)
        assert h == [1, 2]
        assert out == [1, 2, 3]

    def test_immutable(self) -> None:
        h = History([1])
        with pytest.raises(TypeError):
            h[0] = 2  # type: ignore[index]
        with pytest.raises(AttributeError):
            h.other = 1  # type: ignore[attr-defined]

    def test_extend_and_append_return_new_versions(self) -> None:
        h1 = History([1])
        h2 = h1.extend([2, 3])
        h3 = h2.append(4)
        assert h1 == [1]
        assert h2 == [1, 2, 3]
        assert h3 == [1, 2, 3, 4]

    def test_extend_with_nothing_returns_self(self) -> None:
        h = History([1])
        assert h.extend([]) is h
        assert h.extend(()) is h

    def test_newer_view_invisible_to_older(self) -> None:
        old = History(["a"])
        new = old.extend(["b"])
        assert len(old) == 1
        assert list(old) == ["a"]
        assert "b" not in old
        assert old[-1] == "a"
        assert old[:] == ("a",)
        assert list(reversed(old)) == ["a"]
        assert old.to_list() == ["a"]
        assert old != new
        with pytest.raises(IndexError):
            old[1]

    def test_branching_from_an_old_version(self) -> None:
        base = History([0])
        left = base.extend([1])
        right = base.extend([2])
        left2 = left.extend([11])
        right2 = right.extend([22])
        again = left.extend([12])
        assert base == [0]
        assert left == [0, 1]
        assert right == [0, 2]
        assert left2 == [0, 1, 11]
        assert right2 == [0, 2, 22]
        assert again == [0, 1, 12]

    def test_extend_with_itself(self) -> None:
        h = History([1, 2])
        assert h.extend(h) == [1, 2, 1, 2]
        assert h == [1, 2]

    def test_suffix_after(self) -> None:
        base = History([1])
        left = base.extend([2, 3])
        right = base.extend([4])
        assert left.suffix_after(base) == [2, 3]
        assert left.suffix_after(left) == []
        assert base.suffix_after(left) is None
        assert right.suffix_after(base) == [4]
        assert right.suffix_after(left) is None
        assert left.suffix_after(History([1, 2])) == [3]
        assert left.suffix_after(History([9])) is None

    def test_extending_the_newest_view_shares_storage(self) -> None:
        # White-box: appending to the newest version must not copy the history.
        h1 = History(list(range(1000)))
        h2 = h1.extend([1000])
        h3 = h2.extend([1001])
        assert h1._items is h2._items is h3._items


@settings(max_examples=150, deadline=None)
@given(history_programs)
def test_history_behaves_like_immutable_lists(
    program: list[tuple[int, list[int]]],
) -> None:
    versions: list[History[int]] = [History()]
    models: list[list[int]] = [[]]
    for which, items in program:
        parent = which % len(versions)
        versions.append(versions[parent].extend(items))
        models.append([*models[parent], *items])
        for view, model in zip(versions, models, strict=True):
            assert len(view) == len(model)
            assert list(view) == model
            assert view == model
            assert view == tuple(model)
            assert view.to_list() == model
    for view, model in zip(versions, models, strict=True):
        assert list(reversed(view)) == model[::-1]
        assert view[1:-1] == tuple(model[1:-1])
        assert view[::2] == tuple(model[::2])
        for i in range(-len(model), len(model)):
            assert view[i] == model[i]
        assert hash(view) == hash(tuple(model))
        assert repr(view) == f"History({model!r})"
    for newer, newer_model in zip(versions, models, strict=True):
        for older, older_model in zip(versions, models, strict=True):
            expected = (
                newer_model[len(older_model) :]
                if newer_model[: len(older_model)] == older_model
                else None
            )
            assert newer.suffix_after(older) == expected


# ------------------------------------------------------------------------ state


class TestVersionedState:
    def test_defaults(self) -> None:
        state = VersionedState()
        assert state.messages == []
        assert dict(state.extra) == {}
        assert state.errors == []
        assert state.versions == Versions(messages=1, extra=1, errors=1)
        assert (
            state.versions.messages,
            state.versions.extra,
            state.versions.errors,
        ) == (1, 1, 1)

    def test_with_user_message(self) -> None:
        state = VersionedState.with_user_message("Hi?")
        assert state.messages == [Message.user("Hi?")]
        assert state.versions == Versions()

    def test_with_messages(self) -> None:
        messages = [Message.system("be nice"), Message.user("hi")]
        state = VersionedState.with_messages(iter(messages))
        assert state.messages == messages
        assert isinstance(state.messages, History)
        assert state.versions == Versions()

    def test_builder(self) -> None:
        state = (
            VersionedState.builder()
            .with_system_message("sys")
            .with_user_message("u")
            .with_assistant_message("a")
            .with_message("critic", "c")
            .with_extra("k", 1)
            .with_extra("k", 2)
            .with_extra("other", [1])
            .build()
        )
        assert [m.role for m in state.messages] == [
            "system",
            "user",
            "assistant",
            "critic",
        ]
        assert [m.content for m in state.messages] == ["sys", "u", "a", "c"]
        assert dict(state.extra) == {"k": 2, "other": [1]}
        assert state.versions == Versions()

    def test_builder_rejects_bad_input(self) -> None:
        with pytest.raises(StateError, match="extra keys"):
            VersionedState.builder().with_extra(1, "x")  # type: ignore[arg-type]
        with pytest.raises(StateError):
            VersionedState.builder().with_message("", "x")

    def test_builder_results_are_independent(self) -> None:
        builder = VersionedState.builder().with_user_message("a")
        first = builder.build()
        builder.with_user_message("b").with_extra("k", 1)
        assert first.messages == [Message.user("a")]
        assert dict(first.extra) == {}

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"messages": "hello"}, "messages must be a list"),
            ({"messages": Message.user("x")}, "messages"),
            ({"messages": ["hello"]}, "only Message"),
            ({"messages": 3}, "messages"),
            ({"extra": [("k", 1)]}, "extra must be a mapping"),
            ({"extra": {1: "x"}}, "extra keys must be strings"),
            ({"errors": ["boom"]}, "only ErrorEvent"),
            ({"versions": (1, 1, 1)}, "Versions"),
        ],
        ids=repr,
    )
    def test_bad_input(self, kwargs: dict[str, Any], match: str) -> None:
        with pytest.raises(StateError, match=match):
            VersionedState(**kwargs)

    def test_extra_is_read_only_and_copied(self) -> None:
        data = {"k": 1}
        state = VersionedState(extra=data)
        data["k"] = 2
        data["new"] = 3
        assert dict(state.extra) == {"k": 1}
        with pytest.raises(TypeError):
            state.extra["k"] = 5  # type: ignore[index]

    def test_extra_given_as_a_mapping_proxy_is_isolated_too(self) -> None:
        # A read-only view over a dict the caller keeps must not let later
        # changes of that dict leak into the (immutable) state.
        data: dict[str, Any] = {"k": 1}
        state = VersionedState(extra=MappingProxyType(data))
        data["k"] = 2
        assert dict(state.extra) == {"k": 1}

    def test_extra_keys_validated_for_mapping_proxies(self) -> None:
        with pytest.raises(StateError, match="extra keys must be strings"):
            VersionedState(extra=MappingProxyType({1: "x"}))

    def test_messages_given_as_list_are_copied(self) -> None:
        messages = [Message.user("a")]
        state = VersionedState(messages=messages)
        messages.append(Message.user("b"))
        assert len(state.messages) == 1

    def test_frozen(self) -> None:
        state = VersionedState()
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            state.messages = History()  # type: ignore[misc]

    def test_equality(self) -> None:
        assert VersionedState.with_user_message("a") == VersionedState(
            messages=[Message.user("a")]
        )
        assert VersionedState.with_user_message(
            "a"
        ) != VersionedState.with_user_message("b")
        assert VersionedState() != VersionedState(versions=Versions(messages=2))
        state = VersionedState(extra={"k": 1})
        state.snapshot()
        assert state == VersionedState(extra={"k": 1})

    def test_versions(self) -> None:
        versions = Versions(messages=3, extra=5, errors=2)
        assert versions.gate_key() == (3, 5)
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            versions.messages = 4  # type: ignore[misc]


class TestSnapshot:
    def test_contents(self) -> None:
        state = VersionedState(
            messages=[Message.user("hi")],
            extra={"k": 1},
            versions=Versions(messages=2, extra=3, errors=1),
        )
        snap = state.snapshot()
        assert isinstance(snap, StateSnapshot)
        assert snap.messages == [Message.user("hi")]
        assert dict(snap.extra) == {"k": 1}
        assert snap.errors == []
        assert snap.versions == Versions(messages=2, extra=3, errors=1)

    def test_cached_and_shares_storage(self) -> None:
        state = VersionedState.with_messages([Message.user(str(i)) for i in range(500)])
        snap = state.snapshot()
        assert state.snapshot() is snap
        assert snap.messages is state.messages
        assert snap.extra is state.extra
        assert snap.errors is state.errors

    def test_read_only(self) -> None:
        snap = VersionedState(extra={"k": 1}).snapshot()
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            snap.extra = {}  # type: ignore[misc]
        with pytest.raises(TypeError):
            snap.extra["k"] = 2  # type: ignore[index]

    def test_last_message(self) -> None:
        assert VersionedState().snapshot().last_message is None
        state = VersionedState.with_messages(
            [Message.user("a"), Message.assistant("b")]
        )
        assert state.snapshot().last_message == Message.assistant("b")

    def test_old_snapshot_unchanged_by_later_barriers(self) -> None:
        state = VersionedState.with_user_message("first")
        old = state.snapshot()
        states = [state]
        for i in range(3):
            partial = NodePartial(
                messages=[Message.assistant(f"m{i}")], extra={f"k{i}": i}
            )
            states.append(apply_barrier(states[-1], ["n"], [partial]).state)
        assert old.messages == [Message.user("first")]
        assert dict(old.extra) == {}
        assert old.versions == Versions()
        assert len(states[-1].messages) == 4
        assert states[-1].versions.messages == 4
        # Every intermediate state still sees exactly its own messages.
        assert [len(s.messages) for s in states] == [1, 2, 3, 4]
        # A branch from an old state does not disturb newer ones.
        branch = apply_barrier(
            states[1], ["n"], [NodePartial(messages=[Message.user("branch")])]
        ).state
        assert branch.messages[-1] == Message.user("branch")
        assert states[2].messages[-1] == Message.assistant("m1")
        assert states[3].messages[2] == Message.assistant("m1")

    def test_barrier_appends_without_copying(self) -> None:
        # White-box: the new state's history shares the old one's storage.
        state = VersionedState.with_messages([Message.user(str(i)) for i in range(200)])
        new = apply_barrier(
            state, ["n"], [NodePartial(messages=[Message.assistant("x")])]
        ).state
        assert new.messages._items is state.messages._items
        assert len(state.messages) == 200
        assert len(new.messages) == 201


# ---------------------------------------------------------------------- partials


class TestNodePartial:
    def test_defaults_and_empty(self) -> None:
        partial = NodePartial()
        assert partial.messages is None
        assert partial.extra is None
        assert partial.errors is None
        assert partial.frontier is None
        assert partial == NodePartial.EMPTY

    def test_values_are_normalised(self) -> None:
        error = ErrorEvent.app("boom")
        extra = {"k": 1, "gone": None}
        partial = NodePartial(
            messages=[Message.user("a")],
            extra=extra,
            errors=[error],
            frontier=Append(["x"]),
        )
        assert partial.messages == (Message.user("a"),)
        assert partial.errors == (error,)
        assert dict(partial.extra or {}) == {"k": 1, "gone": None}
        extra["k"] = 2
        assert (partial.extra or {})["k"] == 1
        with pytest.raises(TypeError):
            partial.extra["k"] = 3  # type: ignore[index]
        assert partial.frontier == Append(("x",))

    def test_keyword_only(self) -> None:
        with pytest.raises(TypeError):
            NodePartial([Message.user("a")])  # type: ignore[misc]

    def test_single_message_must_be_wrapped(self) -> None:
        with pytest.raises(StateError, match=r"wrap it as \[message\]"):
            NodePartial(messages=Message.user("a"))  # type: ignore[arg-type]

    def test_single_error_must_be_wrapped(self) -> None:
        with pytest.raises(StateError, match=r"wrap it as \[error\]"):
            NodePartial(errors=ErrorEvent.app("x"))  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        "messages",
        ["text", ["text"], [Message.user("a"), {"role": "user"}], 5],
        ids=repr,
    )
    def test_bad_messages(self, messages: Any) -> None:
        with pytest.raises(StateError, match=r"NodePartial\.messages"):
            NodePartial(messages=messages)

    @pytest.mark.parametrize("errors", ["boom", ["boom"], [Exception("x")]], ids=repr)
    def test_bad_errors(self, errors: Any) -> None:
        with pytest.raises(StateError, match=r"NodePartial\.errors"):
            NodePartial(errors=errors)

    @pytest.mark.parametrize(
        "extra", [{1: "x"}, {("a",): 1}, [("k", 1)], "k=1", 3], ids=repr
    )
    def test_bad_extra(self, extra: Any) -> None:
        with pytest.raises(StateError, match="extra"):
            NodePartial(extra=extra)

    def test_bad_extra_keys_in_a_mapping_proxy(self) -> None:
        with pytest.raises(StateError, match="extra keys must be strings"):
            NodePartial(extra=MappingProxyType({1: "x"}))

    @pytest.mark.parametrize(
        "frontier", [["a"], "a", ("a",), Replace, {"replace": ["a"]}], ids=repr
    )
    def test_bad_frontier(self, frontier: Any) -> None:
        with pytest.raises(StateError, match=r"Replace\(\[\.\.\.\]\) or Append"):
            NodePartial(frontier=frontier)

    def test_frozen(self) -> None:
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            NodePartial().messages = ()  # type: ignore[misc]


class TestFrontierCommands:
    @pytest.mark.parametrize("kind", [Replace, Append])
    def test_targets_become_tuples(self, kind: Any) -> None:
        assert kind(["a", "b"]).targets == ("a", "b")
        assert kind(iter(["a"])).targets == ("a",)
        assert kind([]).targets == ()
        assert kind(["a"]) == kind(("a",))

    @pytest.mark.parametrize("kind", [Replace, Append])
    def test_bare_string_rejected(self, kind: Any) -> None:
        with pytest.raises(StateError, match=r"Replace\(\['node'\]\)"):
            kind("node")

    @pytest.mark.parametrize("kind", [Replace, Append])
    @pytest.mark.parametrize("targets", [None, 3, [1], ["a", None], [["a"]]], ids=repr)
    def test_bad_targets(self, kind: Any, targets: Any) -> None:
        with pytest.raises(StateError):
            kind(targets)

    def test_replace_and_append_differ(self) -> None:
        assert Replace(["a"]) != Append(["a"])
