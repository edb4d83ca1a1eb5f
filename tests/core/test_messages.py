"""Messages for tool-calling agents: `ToolCall`, the new `Message` fields, the
OpenAI chat format and the JSON form that checkpoints and events use."""

from __future__ import annotations

import copy
import datetime as dt
import json
import pickle
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weavegraph import Message, Role, StateError, VersionedState
from weavegraph._codec import TAG, converter, decode_value, encode_value
from weavegraph._core.state import ToolCall
from weavegraph._core.values import check_value


def call(id: str = "call_1", name: str = "search", **arguments: Any) -> ToolCall:
    return ToolCall(id, name, arguments)


# --------------------------------------------------------------------- ToolCall


class TestToolCall:
    def test_fields(self) -> None:
        c = ToolCall("call_1", "search", {"query": "trio", "limit": 3})
        assert (c.id, c.name) == ("call_1", "search")
        assert dict(c.arguments) == {"query": "trio", "limit": 3}

    def test_arguments_default_to_none_given(self) -> None:
        assert dict(ToolCall("c", "now").arguments) == {}

    def test_arguments_are_a_read_only_copy(self) -> None:
        given_args: dict[str, Any] = {"q": "x"}
        c = ToolCall("c", "f", given_args)
        given_args["q"] = "changed"
        assert c.arguments["q"] == "x"
        with pytest.raises(TypeError):
            c.arguments["q"] = "y"  # type: ignore[index]
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            c.id = "other"  # type: ignore[misc]

    def test_equal_and_hashable(self) -> None:
        a, b = call(q=1), call(q=1)
        assert a == b
        assert hash(a) == hash(b)
        assert a != call(q=2)
        assert a != call(id="call_2", q=1)
        assert len({a, b, call(q=2)}) == 2

    def test_repr(self) -> None:
        assert (
            repr(call(q=1))
            == "ToolCall(id='call_1', name='search', arguments={'q': 1})"
        )

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"id": "", "name": "f"}, "ToolCall.id"),
            ({"id": 1, "name": "f"}, "ToolCall.id"),
            ({"id": None, "name": "f"}, "ToolCall.id"),
            ({"id": "c", "name": ""}, "ToolCall.name"),
            ({"id": "c", "name": b"f"}, "ToolCall.name"),
            ({"id": "c\ud800", "name": "f"}, "ToolCall.id"),
            ({"id": "c", "name": "f", "arguments": [1]}, "ToolCall.arguments"),
            ({"id": "c", "name": "f", "arguments": "{}"}, "ToolCall.arguments"),
            ({"id": "c", "name": "f", "arguments": {1: "x"}}, "ToolCall.arguments"),
        ],
        ids=repr,
    )
    def test_wrong_types_name_the_field(self, kwargs: Any, field: str) -> None:
        with pytest.raises(StateError, match=field):
            ToolCall(**kwargs)

    def test_unstorable_arguments_name_the_path(self) -> None:
        with pytest.raises(
            StateError, match=r'cannot store ToolCall.arguments\["when"\]\[0\]'
        ):
            ToolCall("c", "f", {"when": [object()]})

    def test_storable_values_beyond_json_are_kept(self) -> None:
        when = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
        c = ToolCall("c", "f", {"when": when, "pair": (1, 2)})
        assert c.arguments["when"] is when
        assert c.arguments["pair"] == (1, 2)


class TestToolCallOpenAI:
    def openai(self, arguments: Any = '{"query": "trio"}', **extra: Any) -> Any:
        return {
            "id": "call_abc",
            "type": "function",
            "function": {"name": "search", "arguments": arguments},
            **extra,
        }

    def test_from_openai(self) -> None:
        c = ToolCall.from_openai(self.openai())
        assert c == ToolCall("call_abc", "search", {"query": "trio"})

    def test_to_openai(self) -> None:
        c = ToolCall("call_abc", "search", {"query": "trïo", "n": [1, 2.5, None]})
        out = c.to_openai()
        assert out == {
            "id": "call_abc",
            "type": "function",
            "function": {"name": "search", "arguments": out["function"]["arguments"]},
        }
        text = out["function"]["arguments"]
        assert isinstance(text, str)
        assert json.loads(text) == {"query": "trïo", "n": [1, 2.5, None]}
        assert ToolCall.from_openai(out) == c

    def test_empty_arguments_text_means_no_arguments(self) -> None:
        for text in ("", "  "):
            assert dict(ToolCall.from_openai(self.openai(text)).arguments) == {}
        assert ToolCall("c", "now").to_openai()["function"]["arguments"] == "{}"

    def test_missing_arguments_and_type(self) -> None:
        c = ToolCall.from_openai({"id": "c", "function": {"name": "now"}})
        assert c == ToolCall("c", "now")

    def test_arguments_as_an_object(self) -> None:
        # Some OpenAI-compatible servers send the arguments parsed.
        c = ToolCall.from_openai(self.openai({"query": "trio"}))
        assert dict(c.arguments) == {"query": "trio"}

    def test_tuples_render_as_arrays(self) -> None:
        text = call(pair=(1, 2)).to_openai()["function"]["arguments"]
        assert json.loads(text) == {"pair": [1, 2]}

    @pytest.mark.parametrize(
        ("arguments", "match"),
        [
            ('{"query": ', "not valid JSON"),
            ("[1, 2]", "must be a JSON object"),
            ('"text"', "must be a JSON object"),
            (42, "is JSON text"),
        ],
        ids=repr,
    )
    def test_bad_arguments(self, arguments: Any, match: str) -> None:
        with pytest.raises(StateError, match=match):
            ToolCall.from_openai(self.openai(arguments))

    def test_bad_arguments_name_the_call(self) -> None:
        with pytest.raises(StateError, match=r"'call_abc' \('search'\)"):
            ToolCall.from_openai(self.openai("{oops"))

    @pytest.mark.parametrize(
        ("obj", "match"),
        [
            ("call", "is an object"),
            ([], "is an object"),
            ({"id": "c", "type": "custom", "custom": {}}, "only function tool calls"),
            ({"id": "c"}, "needs a 'function' object"),
            ({"id": "c", "function": "f"}, "needs a 'function' object"),
            ({"function": {"name": "f"}}, "ToolCall.id"),
            ({"id": "c", "function": {"arguments": "{}"}}, "ToolCall.name"),
        ],
        ids=repr,
    )
    def test_malformed_calls(self, obj: Any, match: str) -> None:
        with pytest.raises(StateError, match=match):
            ToolCall.from_openai(obj)

    @pytest.mark.parametrize(
        ("value", "match"),
        [
            ({1, 2}, r'ToolCall.arguments\["x"\] is a set'),
            (b"raw", "is a bytes"),
            (float("nan"), "JSON cannot hold"),
            ({1: "a"}, "has the key 1"),
            ([dt.date(2026, 1, 1)], r'\["x"\]\[0\] is a date'),
        ],
        ids=repr,
    )
    def test_to_openai_refuses_what_json_cannot_hold(
        self, value: Any, match: str
    ) -> None:
        c = ToolCall("c", "f", {"x": value})
        with pytest.raises(StateError, match=match):
            c.to_openai()


# ---------------------------------------------------------------------- Message


class TestMessageFields:
    def test_defaults_keep_old_code_working(self) -> None:
        m = Message("user", "hi")
        assert m.tool_calls == ()
        assert m.tool_call_id is None
        assert m.name is None
        assert dict(m.metadata) == {}
        assert m == Message.user("hi")
        assert hash(m) == hash(Message.user("hi"))
        assert repr(m) == "Message(role='user', content='hi')"

    def test_all_fields(self) -> None:
        c = call(q=1)
        m = Message(
            "assistant",
            "",
            tool_calls=[c],
            name="planner",
            metadata={"model": "gpt", "tokens": 12},
        )
        assert m.tool_calls == (c,)
        assert type(m.tool_calls) is tuple
        assert m.name == "planner"
        assert dict(m.metadata) == {"model": "gpt", "tokens": 12}
        assert "tool_calls=(ToolCall(" in repr(m)
        assert "metadata={'model': 'gpt', 'tokens': 12}" in repr(m)

    def test_new_fields_are_keyword_only(self) -> None:
        with pytest.raises(TypeError):
            Message("assistant", "", [call()])  # type: ignore[misc]

    def test_equality_covers_the_new_fields(self) -> None:
        base = Message("tool", "ok")
        assert base != Message("tool", "ok", tool_call_id="c")
        assert base != Message("tool", "ok", name="f")
        assert base != Message("tool", "ok", metadata={"a": 1})
        assert base != Message("tool", "ok", tool_calls=[call()])
        assert Message("tool", "ok", metadata={"a": 1}) == Message(
            "tool", "ok", metadata={"a": 1}
        )
        # Hashable even with metadata: equal messages hash alike.
        assert hash(Message("t", "x", metadata={"a": 1})) == hash(
            Message("t", "x", metadata={"a": 1})
        )

    def test_metadata_is_a_read_only_copy(self) -> None:
        given_meta: dict[str, Any] = {"a": 1}
        m = Message("user", "hi", metadata=given_meta)
        given_meta["a"] = 2
        assert m.metadata["a"] == 1
        with pytest.raises(TypeError):
            m.metadata["a"] = 3  # type: ignore[index]

    def test_pickle_and_deepcopy_keep_every_field(self) -> None:
        m = Message(
            "assistant",
            "",
            tool_calls=[call(q=[1])],
            name="bot",
            metadata={"k": {"n": 1}},
        )
        for copied in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m)):
            assert copied == m
            assert dict(copied.metadata) == {"k": {"n": 1}}
            assert dict(copied.tool_calls[0].arguments) == {"q": [1]}

    def test_evolve_takes_the_public_names(self) -> None:
        m = attrs.evolve(Message.user("hi"), metadata={"x": 1}, name="ann")
        assert dict(m.metadata) == {"x": 1}
        assert m.name == "ann"

    def test_tool_calls_accept_any_iterable(self) -> None:
        calls = [call("a"), call("b")]
        assert Message("assistant", "", tool_calls=iter(calls)).tool_calls == tuple(
            calls
        )

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"tool_calls": call()}, "Message.tool_calls must be a list"),
            ({"tool_calls": "call_1"}, "Message.tool_calls must be a list"),
            ({"tool_calls": {"id": "c"}}, "Message.tool_calls must be a list"),
            ({"tool_calls": 3}, "Message.tool_calls must be a list"),
            ({"tool_calls": [{"id": "c"}]}, "only ToolCall objects.*from_openai"),
            ({"tool_call_id": ""}, "Message.tool_call_id"),
            ({"tool_call_id": 5}, "Message.tool_call_id"),
            ({"name": ""}, "Message.name"),
            ({"name": ["f"]}, "Message.name"),
            ({"metadata": [("a", 1)]}, "Message.metadata must be a mapping"),
            ({"metadata": None}, "Message.metadata must be a mapping"),
            ({"metadata": {1: "a"}}, "Message.metadata keys must be strings"),
            ({"metadata": {"f": lambda: 1}}, r'cannot store Message.metadata\["f"\]'),
        ],
        ids=repr,
    )
    def test_wrong_types_name_the_field(self, kwargs: Any, match: str) -> None:
        with pytest.raises(StateError, match=match):
            Message("assistant", "x", **kwargs)

    def test_tool_call_ids_are_unique_within_a_message(self) -> None:
        with pytest.raises(StateError, match="two calls with the id 'c'"):
            Message.assistant(tool_calls=[call("c", "f"), call("c", "g")])


class TestHelpers:
    def test_assistant_with_tool_calls(self) -> None:
        calls = [call("a", q=1), call("b", "fetch", url="x")]
        m = Message.assistant(tool_calls=calls)
        assert m.role is Role.ASSISTANT
        assert m.content == ""
        assert m.tool_calls == tuple(calls)
        assert Message.assistant("thinking", tool_calls=calls[:1]).content == "thinking"
        assert Message.assistant("plain") == Message("assistant", "plain")

    def test_tool_result_answers_its_call(self) -> None:
        c = call("call_9", "weather", city="Oslo")
        m = Message.tool_result(c, "12°C")
        assert m == Message("tool", "12°C", tool_call_id="call_9", name="weather")
        assert m.role is Role.TOOL

    def test_tool_result_checks_its_arguments(self) -> None:
        with pytest.raises(StateError, match="answers a ToolCall"):
            Message.tool_result({"id": "c"}, "x")  # type: ignore[arg-type]
        with pytest.raises(StateError, match="content must be a string"):
            Message.tool_result(call(), {"temp": 12})  # type: ignore[arg-type]

    def test_tool_takes_an_id(self) -> None:
        assert Message.tool("x") == Message("tool", "x")
        assert Message.tool("x", tool_call_id="c", name="f") == Message.tool_result(
            call("c", "f"), "x"
        )


class TestMessageOpenAI:
    def test_assistant_message_with_tool_calls(self) -> None:
        response = {
            "role": "assistant",
            "content": None,
            "refusal": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "search", "arguments": '{"q":"trio"}'},
                }
            ],
        }
        m = Message.from_openai(response)
        assert m == Message.assistant(tool_calls=[call("call_1", q="trio")])
        out = m.to_openai()
        assert out == {
            "role": "assistant",
            "content": None,
            "tool_calls": response["tool_calls"],
        }

    def test_tool_and_user_messages(self) -> None:
        tool = {"role": "tool", "content": "ok", "tool_call_id": "c", "name": "f"}
        assert Message.from_openai(tool).to_openai() == tool
        user = {"role": "user", "content": "hi"}
        assert Message.from_openai(user) == Message.user("hi")
        assert Message.user("hi").to_openai() == user

    def test_text_parts_are_joined(self) -> None:
        m = Message.from_openai(
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "a"},
                    {"type": "text", "text": "b"},
                ],
            }
        )
        assert m.content == "ab"

    def test_metadata_is_not_sent(self) -> None:
        m = Message("user", "hi", metadata={"trace": "x"})
        assert m.to_openai() == {"role": "user", "content": "hi"}

    @pytest.mark.parametrize(
        ("obj", "match"),
        [
            ("hi", "is an object"),
            ({"role": "user", "content": [{"type": "image_url"}]}, "only text"),
            ({"role": "user", "content": [{"type": "text"}]}, "string 'text'"),
            ({"role": "assistant", "content": "", "tool_calls": "x"}, "is a list"),
            ({"content": "hi"}, "role"),
        ],
        ids=repr,
    )
    def test_malformed(self, obj: Any, match: str) -> None:
        with pytest.raises(StateError, match=match):
            Message.from_openai(obj)


# -------------------------------------------------------------------- JSON form


def to_json(message: Message) -> Any:
    """The converter's form, through real JSON text."""
    return orjson.loads(orjson.dumps(converter.unstructure(message, Message)))


def from_json(doc: Any) -> Message:
    return converter.structure(doc, Message)


class TestJSONForm:
    def test_a_plain_message_is_written_as_before(self) -> None:
        assert to_json(Message.user("hi")) == {"role": "user", "content": "hi"}
        assert to_json(Message("critic", "ok")) == {"role": "critic", "content": "ok"}

    def test_old_json_loads(self) -> None:
        m = from_json({"role": "assistant", "content": "hello"})
        assert m == Message.assistant("hello")

    def test_every_field_is_written(self) -> None:
        m = Message(
            "assistant",
            "",
            tool_calls=[call("c1", q="trio")],
            tool_call_id="t",
            name="bot",
            metadata={"tokens": 3},
        )
        assert to_json(m) == {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "c1", "name": "search", "arguments": {"q": "trio"}}],
            "tool_call_id": "t",
            "name": "bot",
            "metadata": {"tokens": 3},
        }
        assert from_json(to_json(m)) == m

    def test_values_beyond_json_come_back_exactly(self) -> None:
        when = dt.datetime(2026, 3, 4, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=2)))
        m = Message(
            "assistant",
            "",
            tool_calls=[ToolCall("c", "f", {"pair": (1, 2), "tags": {"a"}, TAG: 1})],
            metadata={"when": when, "raw": b"\x00", "big": 2**70, TAG: "x"},
        )
        back = from_json(to_json(m))
        assert back == m
        args = back.tool_calls[0].arguments
        assert type(args["pair"]) is tuple
        assert type(args["tags"]) is set
        assert args[TAG] == 1
        assert back.metadata["when"] == when
        assert back.metadata["when"].utcoffset() == dt.timedelta(hours=2)
        assert back.metadata["raw"] == b"\x00"
        assert back.metadata[TAG] == "x"

    def test_tool_calls_unstructure_on_their_own(self) -> None:
        c = call(q=1)
        doc = converter.unstructure(c, ToolCall)
        assert doc == {"id": "call_1", "name": "search", "arguments": {"q": 1}}
        assert converter.structure(doc, ToolCall) == c

    def test_a_mutated_nested_value_is_caught_when_written(self) -> None:
        inner: list[Any] = []
        m = Message("user", "hi", metadata={"items": inner})
        inner.append(object())
        with pytest.raises(StateError, match=r'cannot store metadata\["items"\]\[0\]'):
            converter.unstructure(m, Message)

    @pytest.mark.parametrize(
        ("doc", "error"),
        [
            ({"role": "assistant", "content": "", "tool_calls": {}}, ValueError),
            ({"role": "assistant", "content": "", "tool_calls": ["c"]}, ValueError),
            (
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [{"id": "c", "name": "f", "arguments": [1]}],
                },
                ValueError,
            ),
            ({"role": "user", "content": "x", "metadata": [1]}, ValueError),
            (
                {"role": "user", "content": "x", "metadata": {TAG: "nope", "v": 1}},
                StateError,
            ),
            ({"role": "tool", "content": "x", "tool_call_id": 3}, StateError),
            ({"role": "tool", "content": "x", "name": ""}, StateError),
            (
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [{"id": "", "name": "f"}],
                },
                StateError,
            ),
        ],
        ids=repr,
    )
    def test_malformed_json_is_refused(self, doc: Any, error: type[Exception]) -> None:
        # The row codecs turn both into a CheckpointError naming the step.
        with pytest.raises(error):
            from_json(doc)

    def test_state_json_carries_the_fields(self) -> None:
        m = Message.assistant(tool_calls=[call(q=1)])
        state = VersionedState.with_messages([Message.user("q"), m])
        doc = orjson.loads(orjson.dumps(converter.unstructure(state, VersionedState)))
        assert doc["messages"][1]["tool_calls"][0]["id"] == "call_1"
        assert converter.structure(doc, VersionedState) == state


class TestInsideStoredValues:
    """A `Message` is itself a storable value (in ``extra``, in an event's data)."""

    def test_a_message_with_tool_calls_is_storable(self) -> None:
        m = Message(
            "assistant",
            "",
            tool_calls=[call(q=(1, 2))],
            metadata={"at": dt.date(2026, 1, 1)},
        )
        assert check_value({"last": m}) is None
        encoded = orjson.loads(orjson.dumps(encode_value({"last": m})))
        back = decode_value(encoded)["last"]
        assert back == m
        assert type(back.tool_calls[0].arguments["q"]) is tuple

    def test_a_message_written_before_the_fields_loads(self) -> None:
        old = {
            TAG: "attrs",
            "t": "weavegraph._core.state:Message",
            "v": {"role": "user", "content": "hi"},
        }
        assert decode_value(old) == Message.user("hi")

    def test_an_unregistered_value_inside_is_named(self) -> None:
        inner: list[Any] = []
        m = Message("user", "x", metadata={"k": inner})
        inner.append(object())
        found = check_value({"m": m}, "extra")
        assert found is not None
        assert found.path == 'extra["m"]._metadata["k"][0]'


# ------------------------------------------------------------------- properties

texts = st.text(max_size=6).filter(lambda t: check_value(t) is None)
names = texts.filter(bool)
json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
)
json_values = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3)
    ),
    max_leaves=8,
)
tool_calls = st.builds(
    ToolCall, names, names, st.dictionaries(texts, json_values, max_size=3)
)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    calls = draw(st.lists(tool_calls, max_size=3, unique_by=lambda c: c.id))
    return Message(
        draw(st.sampled_from(["user", "assistant", "tool", "critic"])),
        draw(texts),
        tool_calls=calls,
        tool_call_id=draw(st.none() | names),
        name=draw(st.none() | names),
        metadata=draw(st.dictionaries(texts, json_values, max_size=3)),
    )


@settings(max_examples=200)
@given(messages())
def test_every_message_round_trips_through_json(message: Message) -> None:
    assert from_json(to_json(message)) == message
    assert decode_value(orjson.loads(orjson.dumps(encode_value(message)))) == message


@settings(max_examples=200)
@given(tool_calls)
def test_every_json_tool_call_round_trips_through_the_openai_format(
    c: ToolCall,
) -> None:
    wire = json.loads(json.dumps(c.to_openai()))
    assert ToolCall.from_openai(wire) == c
