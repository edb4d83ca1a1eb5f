"""Replay conformance helpers."""

from __future__ import annotations

import pytest
from helpers import chain_app, hi

from weavegraph import (
    DiagnosticEvent,
    MemorySink,
    NodeEvent,
    RuntimeConfig,
    VersionedState,
)
from weavegraph.testing import (
    ReplayComparison,
    ReplayMismatchError,
    ReplayRun,
    compare_event_sequences,
    compare_final_state,
    compare_replay_runs,
    normalize_event,
    normalize_state,
)


def test_event_normalization_drops_only_the_timestamp() -> None:
    a = NodeEvent(scope="s", message="m", node_id="n", step=1, timestamp=1.0)
    b = NodeEvent(scope="s", message="m", node_id="n", step=1, timestamp=2.0)
    assert normalize_event(a) == normalize_event(b)
    assert "timestamp" not in normalize_event(a)
    assert normalize_event(a)["metadata"] == {"node_id": "n", "step": 1}


def test_state_normalization_has_versions_and_channels() -> None:
    normalized = normalize_state(VersionedState.builder().with_extra("k", 1).build())
    assert normalized == {
        "messages": [],
        "messages_version": 1,
        "extra": {"k": 1},
        "extra_version": 1,
        "errors": [],
        "errors_version": 1,
    }


def test_event_sequences() -> None:
    one = [NodeEvent(scope="s", message="a"), NodeEvent(scope="s", message="b")]
    other = [NodeEvent(scope="s", message="a"), NodeEvent(scope="s", message="c")]
    assert compare_event_sequences(one, list(one)).is_match
    assert compare_event_sequences([], []).is_match
    (diff,) = compare_event_sequences(one, other).differences
    assert diff.startswith("event 1 differs: left=")
    assert '"message":"b"' in diff and '"message":"c"' in diff
    (count,) = compare_event_sequences(one, one[:1]).differences
    assert count == "event count differs: left=2 right=1"
    ignore = compare_event_sequences(one, other, normalizer=lambda e: e.type)
    assert ignore.is_match


def test_final_state_differences_name_the_channel() -> None:
    a = VersionedState.with_user_message("x")
    b = VersionedState.builder().with_user_message("x").with_extra("k", 1).build()
    (diff,) = compare_final_state(a, b).differences
    assert diff == 'final state differs in extra: left={} right={"k":1}'


def test_run_comparison_lists_state_then_events_and_asserts() -> None:
    left = ReplayRun(VersionedState(), [DiagnosticEvent(scope="x", message="1")])
    right = ReplayRun(
        VersionedState.with_user_message("y"), [DiagnosticEvent(scope="x", message="2")]
    )
    comparison = compare_replay_runs(left, right)
    assert len(comparison.differences) == 2
    assert comparison.differences[0].startswith("final state differs in messages")
    assert comparison.differences[-1].startswith("event 0 differs")
    with pytest.raises(ReplayMismatchError) as info:
        comparison.assert_matches()
    assert info.value.differences == comparison.differences
    assert "replay conformance mismatch" in str(info.value)
    ReplayComparison().assert_matches()


async def test_two_runs_of_the_same_session_replay_equal() -> None:
    runs = []
    for _ in range(2):
        sink = MemorySink()
        app = chain_app(["A", "B"], RuntimeConfig(session_id="same"))
        final = await app.invoke_with_sinks(hi(), [sink])
        runs.append(ReplayRun(final, sink.events))
    compare_replay_runs(*runs).assert_matches()
