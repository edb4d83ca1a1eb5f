"""The public surface: ``__all__`` lists exactly the public names, all importable."""

from __future__ import annotations

import types

import pytest

import weavegraph
import weavegraph.errors
import weavegraph.lowlevel
import weavegraph.testing

MODULES = [weavegraph, weavegraph.errors, weavegraph.lowlevel, weavegraph.testing]
ROOT_BUDGET = 70

SPEC_NAMES = {
    # Names SPEC.md promises at the package root.
    "GraphBuilder", "START", "END", "NodePartial", "Message", "VersionedState",
    "StateSnapshot", "Role", "Replace", "Append", "Send", "add_messages", "map_merge",
    "add_errors", "App", "RuntimeConfig", "Invocation", "NodeContext", "Node",
    "RetryPolicy", "NodeEvent", "DiagnosticEvent", "LLMEvent", "Event",
    "event_from_json", "STREAM_END_SCOPE", "INVOCATION_END_SCOPE",
    "DIAGNOSTIC_SCOPE", "EventBus", "EventBusConfig", "EventStream", "EventSink",
    "StdOutSink", "MemorySink", "ChannelSink", "JsonLinesSink", "LoggingSink",
    "ErrorEvent", "WeavegraphError", "GraphError", "NodeNotFound", "WorkflowError",
    "StepLimitExceeded", "CheckpointError", "SessionNotFound", "EventBusClosed",
}  # fmt: skip


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_all_is_a_tuple_without_duplicates(module: types.ModuleType) -> None:
    assert isinstance(module.__all__, tuple)
    assert len(set(module.__all__)) == len(module.__all__)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_all_matches_the_public_names_exactly(module: types.ModuleType) -> None:
    public = {
        name
        for name, value in vars(module).items()
        # Subpackages are namespaces, not exported names.
        if not name.startswith("_")
        and name != "annotations"
        and not isinstance(value, types.ModuleType)
    }
    assert set(module.__all__) == public


def test_the_root_stays_small() -> None:
    # The root is for what a workflow author writes every day.
    assert len(weavegraph.__all__) <= ROOT_BUDGET


def test_every_exception_is_in_the_errors_module() -> None:
    for module in MODULES:
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, type) and issubclass(obj, BaseException):
                assert getattr(weavegraph.errors, name, None) is obj, name


def test_every_library_exception_is_in_the_errors_module() -> None:
    # Also those defined away from the root and raised by subpackages.
    import weavegraph.checkpoint
    import weavegraph.notebook
    import weavegraph.serve

    for module in (weavegraph.checkpoint, weavegraph.notebook, weavegraph.serve):
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, type) and issubclass(obj, BaseException):
                assert getattr(weavegraph.errors, name, None) is obj, name


def test_spec_names_are_exported() -> None:
    missing = SPEC_NAMES - set(weavegraph.__all__)
    assert not missing


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_every_exported_name_has_a_docstring(module: types.ModuleType) -> None:
    undocumented = [
        name
        for name in module.__all__
        if callable(getattr(module, name))
        and not isinstance(getattr(module, name), str)
        and not (getattr(module, name).__doc__ or "").strip()
    ]
    assert undocumented == []


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_errors_share_one_base(module: types.ModuleType) -> None:
    for name in module.__all__:
        obj = getattr(module, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, weavegraph.WeavegraphError), name
