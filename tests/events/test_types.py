"""Event records and their normalized JSON form."""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from weavegraph import (
    DIAGNOSTIC_SCOPE,
    INVOCATION_END_SCOPE,
    STREAM_END_SCOPE,
    DiagnosticEvent,
    Event,
    EventBus,
    LLMEvent,
    NodeContext,
    NodeEvent,
    event_from_json,
)
from weavegraph._runtime.lifecycle import LIFECYCLE_SCOPES
from weavegraph.errors import EventDecodeError
from weavegraph.events.steps import STEP_ITEM_SCOPES
from weavegraph.events.types import (
    format_timestamp,
    make_llm_event,
    make_node_event,
    parse_timestamp,
    quantize_timestamp,
)
from weavegraph.lowlevel import stream_end_event


def test_scope_constants_are_exact() -> None:
    assert STREAM_END_SCOPE == "__weavegraph_stream_end__"
    assert INVOCATION_END_SCOPE == "__weavegraph_invocation_end__"
    assert DIAGNOSTIC_SCOPE == "__weavegraph_diagnostic__"


def test_node_event_json_structured_fields_win() -> None:
    event = NodeEvent(
        scope="tick",
        message="processed:1",
        node_id="accumulate",
        step=1,
        metadata={"node_id": "spoof", "extra": 1},
        timestamp=0.5,
        session_id="sess-1",
    )
    assert event.type == "node"
    assert event.to_json() == {
        "type": "node",
        "scope": "tick",
        "message": "processed:1",
        "timestamp": "1970-01-01T00:00:00.500000+00:00",
        "metadata": {
            "node_id": "accumulate",
            "extra": 1,
            "step": 1,
            "session_id": "sess-1",
        },
    }
    assert str(event) == "[accumulate@1] processed:1"


def test_node_event_without_id_or_step_omits_them() -> None:
    event = NodeEvent(scope="s", message="m")
    assert event.to_json()["metadata"] == {}
    assert str(event) == "m"


def test_diagnostic_and_sentinel() -> None:
    event = DiagnosticEvent(
        scope=STREAM_END_SCOPE, message="session=s status=completed step=2"
    )
    assert event.is_stream_end
    assert event.to_json()["type"] == "diagnostic"
    assert event.to_json()["metadata"] == {}
    assert not DiagnosticEvent(scope="other").is_stream_end


def test_llm_event_labels_never_reuse_the_stream_end_scope() -> None:
    chunk = LLMEvent(chunk="Hel", stream_id="s1", node_id="n")
    final = LLMEvent(chunk="Hello", is_final=True, stream_id="s1")
    error = LLMEvent(chunk="boom", is_final=True, metadata={"severity": "error"})
    assert [e.scope_label for e in (chunk, final, error)] == [
        "llm.chunk",
        "llm.final",
        "llm.error",
    ]
    assert not final.is_stream_end
    meta = chunk.to_json()["metadata"]
    assert meta == {"stream_id": "s1", "node_id": "n", "is_final": False}
    assert chunk.message == "Hel"
    assert str(chunk) == "[LLM s1] Hel"


def test_to_json_str_compact_and_pretty() -> None:
    event = NodeEvent(scope="s", message="m", timestamp=0.0)
    compact = event.to_json_str()
    assert "\n" not in compact and ", " not in compact
    pretty = event.to_json_str(pretty=True)
    assert '\n  "type": "node"' in pretty
    assert json.loads(pretty) == json.loads(compact) == event.to_json()


def test_event_from_json_rejects_garbage() -> None:
    with pytest.raises(EventDecodeError, match="unknown event type"):
        event_from_json({"type": "weird", "scope": "s", "message": "m"})
    with pytest.raises(EventDecodeError):
        event_from_json({"scope": "s"})
    with pytest.raises(EventDecodeError):
        event_from_json("[1, 2]")


# Keys the JSON form of an event uses for its own fields (``step``, ``is_final``
# …): a metadata entry under one of them is not an independent fact and cannot
# come back as metadata. Every other key, and every JSON value, round-trips.
_NODE_FIELDS = frozenset({"node_id", "step", "session_id"})
_LLM_FIELDS = frozenset({"session_id", "node_id", "stream_id", "is_final"})
names = st.text(min_size=1, max_size=12)
# What node code may emit under: not the runtime's own scopes.
scopes = names.filter(lambda s: s not in LIFECYCLE_SCOPES and s not in STEP_ITEM_SCOPES)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def metadata(reserved: frozenset[str] = frozenset()) -> st.SearchStrategy[dict]:
    keys = st.text(max_size=12).filter(lambda k: k not in reserved)
    return st.dictionaries(keys, json_values, max_size=4)


# Any instant a datetime can show (years 1..9999), at any float precision: the
# event keeps it in whole microseconds.
stamps = st.floats(-62_135_596_800 + 86_400, 253_402_300_799 - 86_400)

node_events = st.builds(
    NodeEvent,
    scope=names,
    message=st.text(max_size=40),
    node_id=st.none() | names,
    step=st.none() | st.integers(0, 10**6),
    metadata=metadata(_NODE_FIELDS),
    timestamp=stamps,
    session_id=st.none() | names,
)
diagnostic_events = st.builds(
    DiagnosticEvent,
    scope=names,
    message=st.text(max_size=40),
    timestamp=stamps,
    metadata=metadata(),
)
llm_events = st.builds(
    LLMEvent,
    chunk=st.text(max_size=40),
    is_final=st.booleans(),
    session_id=st.none() | names,
    node_id=st.none() | names,
    stream_id=st.none() | names,
    metadata=metadata(_LLM_FIELDS),
    timestamp=stamps,
)
fast_events = st.builds(
    make_node_event,
    names,
    st.text(max_size=40),
    names,
    st.integers(0, 10**6),
    metadata(_NODE_FIELDS),
    stamps,
    names,
) | st.builds(
    make_llm_event,
    st.text(max_size=40),
    st.booleans(),
    names,
    names,
    st.none() | names,
    metadata(_LLM_FIELDS),
    stamps,
)
sentinels = st.builds(
    stream_end_event,
    names,
    st.sampled_from(["completed", "error", "cancelled", "interrupted"]),
    st.integers(0, 10**6),
    st.none() | st.text(max_size=20),
    st.sampled_from([STREAM_END_SCOPE, INVOCATION_END_SCOPE]),
    stamps,
)
every_event = node_events | diagnostic_events | llm_events | fast_events | sentinels


@given(every_event)
def test_json_round_trip_is_exact_for_every_event(event: Event) -> None:
    assert event_from_json(event.to_json()) == event
    assert event_from_json(event.to_json_str()) == event
    assert event_from_json(event.to_json_str(pretty=True)) == event
    # The float and the text name the same instant.
    assert parse_timestamp(event.to_json()["timestamp"]) == event.timestamp
    assert quantize_timestamp(event.timestamp) == event.timestamp


@given(st.data())
async def test_round_trip_is_exact_for_what_nodes_emit(data: st.DataObject) -> None:
    stamp = data.draw(stamps)
    async with EventBus() as bus:
        stream = bus.subscribe()
        ctx = NodeContext("n", 3, "sess", bus, clock=lambda: stamp)
        text = st.text(max_size=20)
        # Keyword arguments become metadata: the parameters' own names cannot.
        params = frozenset({"scope", "message", "stream_id", "chunk", "text"})
        node_meta = data.draw(metadata(_NODE_FIELDS | params))
        ctx.emit(data.draw(scopes), data.draw(text), **node_meta)
        ctx.emit_diagnostic(
            data.draw(scopes), data.draw(text), **data.draw(metadata(params))
        )
        extra = data.draw(metadata(_LLM_FIELDS | params | {"severity"}))
        ctx.emit_llm_chunk(data.draw(st.none() | names), data.draw(text), **extra)
        ctx.emit_llm_final(data.draw(st.none() | names), data.draw(text), **extra)
    for event in [e async for e in stream]:
        assert event_from_json(event.to_json_str()) == event


@given(stamps)
# Where rounding ``ts * 1e6`` directly goes wrong: from 2041 on its precision
# runs out (these instants once came back one microsecond off, or not at all).
@example(2**51 / 1e6 - 1e-7)
@example(2**51 / 1e6 + 1e-7)
@example(4_464_287_695.3611765)
@example(4_496_428_202.342012)
@example(-4_451_252_836.5124655)
@example(8_589_934_592.078129)
def test_quantized_timestamps_are_fixed_points(stamp: float) -> None:
    q = quantize_timestamp(stamp)
    assert quantize_timestamp(q) == q
    assert abs(q - stamp) <= 0.5e-6 + abs(stamp) * 2**-52
    assert parse_timestamp(format_timestamp(q)) == q


def test_timestamp_text_always_has_six_fractional_digits() -> None:
    assert NodeEvent(scope="s", timestamp=0.0).to_json()["timestamp"] == (
        "1970-01-01T00:00:00.000000+00:00"
    )
    assert DiagnosticEvent(scope="s", timestamp=1.25).to_json()["timestamp"] == (
        "1970-01-01T00:00:01.250000+00:00"
    )
    assert parse_timestamp("1970-01-01T00:00:01.25Z") == 1.25
    assert parse_timestamp("1970-01-01T01:00:01.25+01:00") == 1.25


def test_event_from_json_rejects_a_bad_timestamp() -> None:
    with pytest.raises(EventDecodeError, match="bad timestamp 'yesterday'"):
        event_from_json(
            {"type": "node", "scope": "s", "message": "m", "timestamp": "yesterday"}
        )


def test_sentinels_are_recognised() -> None:
    end = stream_end_event("s", "completed", 1)
    invocation = stream_end_event("s", "completed", 1, scope=INVOCATION_END_SCOPE)
    assert end.is_stream_end and end.is_sentinel
    assert not invocation.is_stream_end and invocation.is_sentinel
    for other in (
        DiagnosticEvent(scope=DIAGNOSTIC_SCOPE),
        NodeEvent(scope=STREAM_END_SCOPE),
        LLMEvent(chunk="x", is_final=True),
    ):
        assert not other.is_sentinel
