"""Event records and their normalized JSON form."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from weavegraph import (
    DIAGNOSTIC_SCOPE,
    INVOCATION_END_SCOPE,
    STREAM_END_SCOPE,
    DiagnosticEvent,
    Event,
    LLMEvent,
    NodeEvent,
    event_from_json,
)
from weavegraph.errors import EventDecodeError


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


_RESERVED = {"node_id", "step", "session_id", "stream_id", "is_final"}
names = st.text(min_size=1, max_size=12)
json_scalars = (
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
)
metadata = st.dictionaries(
    names.filter(lambda k: k not in _RESERVED and k != "severity"),
    json_scalars,
    max_size=4,
)
# Whole microseconds since 1970..2100: what RFC 3339 text can carry exactly.
stamps = st.integers(0, 4_102_444_800_000_000).map(lambda us: us / 1_000_000)

node_events = st.builds(
    NodeEvent,
    scope=names,
    message=st.text(max_size=40),
    node_id=st.none() | names,
    step=st.none() | st.integers(0, 10**6),
    metadata=metadata,
    timestamp=stamps,
    session_id=st.none() | names,
)
diagnostic_events = st.builds(
    DiagnosticEvent, scope=names, message=st.text(max_size=40), timestamp=stamps
)
llm_events = st.builds(
    LLMEvent,
    chunk=st.text(max_size=40),
    is_final=st.booleans(),
    session_id=st.none() | names,
    node_id=st.none() | names,
    stream_id=st.none() | names,
    metadata=metadata,
    timestamp=stamps,
)


@given(node_events | diagnostic_events | llm_events)
def test_json_round_trip_for_every_variant(event: Event) -> None:
    assert event_from_json(event.to_json()) == event
    assert event_from_json(event.to_json_str()) == event
