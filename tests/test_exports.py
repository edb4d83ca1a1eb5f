"""The public surface: ``__all__`` lists exactly the public names, all importable."""

from __future__ import annotations

import types

import weavegraph

SPEC_NAMES = {
    # Names SPEC.md promises at the package root.
    "GraphBuilder", "START", "END", "NodePartial", "Message", "VersionedState",
    "StateSnapshot", "Role", "Replace", "Append", "add_messages", "map_merge",
    "add_errors", "App", "RuntimeConfig", "Invocation", "NodeContext", "Node",
    "RetryPolicy", "NodeEvent", "DiagnosticEvent", "LLMEvent", "Event",
    "event_from_json", "STREAM_END_SCOPE", "INVOCATION_END_SCOPE",
    "DIAGNOSTIC_SCOPE", "EventBus", "EventBusConfig", "EventStream", "EventSink",
    "StdOutSink", "MemorySink", "ChannelSink", "JsonLinesSink", "LoggingSink",
    "ErrorEvent", "WeavegraphError", "GraphError", "NodeNotFound", "WorkflowError",
    "StepLimitExceeded", "CheckpointError", "SessionNotFound", "EventBusClosed",
}  # fmt: skip


def test_all_is_a_tuple_without_duplicates() -> None:
    assert isinstance(weavegraph.__all__, tuple)
    assert len(set(weavegraph.__all__)) == len(weavegraph.__all__)


def test_all_matches_the_public_names_exactly() -> None:
    public = {
        name
        for name, value in vars(weavegraph).items()
        # Subpackages are namespaces, not exported names.
        if not name.startswith("_")
        and name != "annotations"
        and not isinstance(value, types.ModuleType)
    }
    assert set(weavegraph.__all__) == public


def test_spec_names_are_exported() -> None:
    missing = SPEC_NAMES - set(weavegraph.__all__)
    assert not missing


def test_every_exported_name_has_a_docstring() -> None:
    undocumented = [
        name
        for name in weavegraph.__all__
        if callable(getattr(weavegraph, name))
        and not isinstance(getattr(weavegraph, name), str)
        and not (getattr(weavegraph, name).__doc__ or "").strip()
    ]
    assert undocumented == []


def test_errors_share_one_base() -> None:
    for name in weavegraph.__all__:
        obj = getattr(weavegraph, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, weavegraph.WeavegraphError), name
