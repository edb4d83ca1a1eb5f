"""The exception hierarchy and the ErrorEvent / ErrorScope / ErrorDetail records."""

from __future__ import annotations

import datetime as dt
import inspect

import attrs
import pytest

import weavegraph as wg
from weavegraph import (
    ErrorEvent,
    GraphError,
    NodeNotFound,
    RouterError,
    SessionNotFound,
    StateError,
    StepLimitExceeded,
    WeavegraphError,
    WorkflowError,
)
from weavegraph._core.errors import describe_exception
from weavegraph.errors import (
    CycleError,
    DuplicateEdgeError,
    DuplicateNodeError,
    EdgeFromEndError,
    ErrorDetail,
    ErrorScope,
    InvalidEdgeError,
    InvalidNodeError,
    InvalidReducerError,
    InvalidRouterError,
    MissingEntryError,
    MissingInput,
    NodeError,
    NodeTimeoutError,
    NoPathToEndError,
    ProviderError,
    ReducerError,
    ReservedNodeNameError,
    UnknownNodeError,
    UnreachableNodesError,
    ValidationFailed,
)

GRAPH_ERRORS = [
    ReservedNodeNameError,
    DuplicateNodeError,
    InvalidNodeError,
    InvalidEdgeError,
    EdgeFromEndError,
    DuplicateEdgeError,
    UnknownNodeError,
    MissingEntryError,
    CycleError,
    UnreachableNodesError,
    NoPathToEndError,
    InvalidRouterError,
    InvalidReducerError,
]


class TestHierarchy:
    @pytest.mark.parametrize("cls", GRAPH_ERRORS, ids=lambda c: c.__name__)
    def test_graph_errors(self, cls: type[Exception]) -> None:
        assert issubclass(cls, GraphError)
        assert issubclass(cls, WeavegraphError)
        assert issubclass(cls, Exception)

    def test_graph_error_is_a_weavegraph_error(self) -> None:
        assert issubclass(GraphError, WeavegraphError)

    @pytest.mark.parametrize(
        "cls",
        [
            NodeNotFound,
            NodeError,
            RouterError,
            ReducerError,
            WorkflowError,
            StateError,
            SessionNotFound,
        ],
        ids=lambda c: c.__name__,
    )
    def test_other_errors(self, cls: type[Exception]) -> None:
        assert issubclass(cls, WeavegraphError)
        assert not issubclass(cls, GraphError)

    @pytest.mark.parametrize(
        "cls",
        [MissingInput, ProviderError, ValidationFailed, NodeTimeoutError],
        ids=lambda c: c.__name__,
    )
    def test_node_errors(self, cls: type[Exception]) -> None:
        assert issubclass(cls, NodeError)

    def test_step_limit_is_a_workflow_error(self) -> None:
        assert issubclass(StepLimitExceeded, WorkflowError)

    def test_state_error_is_also_a_type_error(self) -> None:
        assert issubclass(StateError, TypeError)

    def test_weavegraph_error_is_a_plain_exception(self) -> None:
        # trio.Cancelled and KeyboardInterrupt (BaseExceptions) are never caught
        # by ``except WeavegraphError``.
        assert WeavegraphError.__bases__ == (Exception,)

    def test_every_exported_exception_derives_from_weavegraph_error(self) -> None:
        exported = [
            obj
            for name in dir(wg)
            if not name.startswith("_")
            and inspect.isclass(obj := getattr(wg, name))
            and issubclass(obj, BaseException)
        ]
        assert GraphError in exported
        assert all(issubclass(cls, WeavegraphError) for cls in exported), [
            c.__name__ for c in exported if not issubclass(c, WeavegraphError)
        ]


class TestExceptionDetails:
    def test_cycle_error(self) -> None:
        err = CycleError("cycle detected in graph: a -> a", ["a", "a"])
        assert err.cycle == ("a", "a")
        assert str(err) == "cycle detected in graph: a -> a"

    @pytest.mark.parametrize("cls", [UnreachableNodesError, NoPathToEndError])
    def test_node_lists(self, cls: type[UnreachableNodesError]) -> None:
        err = cls("msg", ["x", "y"])
        assert err.nodes == ("x", "y")

    def test_node_not_found(self) -> None:
        err = NodeNotFound("ghost", 3)
        assert (err.node, err.step) == ("ghost", 3)
        assert "'ghost'" in str(err)
        assert "step 3" in str(err)

    def test_missing_input(self) -> None:
        err = MissingInput("test_key")
        assert str(err) == "missing expected input: test_key"
        assert err.what == "test_key"

    def test_provider_and_validation(self) -> None:
        assert str(ProviderError("openai", "429")) == "provider error (openai): 429"
        assert ProviderError("openai", "x").provider == "openai"
        assert str(ValidationFailed("empty")) == "validation failed: empty"

    def test_node_timeout(self) -> None:
        err = NodeTimeoutError("slow", 2.5)
        assert str(err) == "node 'slow' timed out after 2.5s"
        assert (err.node, err.timeout) == ("slow", 2.5)
        assert str(NodeTimeoutError("slow", 5.0)) == "node 'slow' timed out after 5s"

    def test_session_not_found(self) -> None:
        err = SessionNotFound("s1")
        assert err.session_id == "s1"
        assert "'s1'" in str(err)

    def test_workflow_error(self) -> None:
        event = ErrorEvent.node("X", 1, "missing expected input: test_key")
        err = WorkflowError(event, session_id="s", step=1)
        assert err.error_event is event
        assert err.state is None
        assert (err.session_id, err.step) == ("s", 1)
        assert str(err) == (
            "workflow failed in node 'X' at step 1: missing expected input: test_key"
        )


class TestErrorScope:
    def test_constructors(self) -> None:
        assert ErrorScope.for_node("n", 2) == ErrorScope(scope="node", node="n", step=2)
        assert ErrorScope.for_scheduler(4) == ErrorScope(scope="scheduler", step=4)
        assert ErrorScope.for_runner("s", 1) == ErrorScope(
            scope="runner", session="s", step=1
        )
        assert ErrorScope.for_app() == ErrorScope()

    def test_str(self) -> None:
        assert str(ErrorScope.for_node("n", 2)) == "node 'n' at step 2"
        assert str(ErrorScope.for_scheduler(4)) == "scheduler at step 4"
        assert str(ErrorScope.for_runner("s", 1)) == "runner of session 's' at step 1"
        assert str(ErrorScope.for_app()) == "app"

    def test_ranks(self) -> None:
        scopes = [
            ErrorScope.for_app(),
            ErrorScope.for_runner("a", 0),
            ErrorScope.for_scheduler(0),
            ErrorScope.for_node("z", 9),
        ]
        ordered = sorted(scopes, key=ErrorScope.sort_key)
        assert [s.scope for s in ordered] == ["node", "scheduler", "runner", "app"]


class TestErrorEvent:
    def test_defaults(self) -> None:
        before = dt.datetime.now(dt.UTC)
        event = ErrorEvent(error=ErrorDetail(message="boom"))
        after = dt.datetime.now(dt.UTC)
        assert event.scope == ErrorScope.for_app()
        assert event.tags == ()
        assert event.context is None
        assert event.when.tzinfo is not None
        assert before <= event.when <= after

    def test_constructors_accept_text_or_weave_error(self) -> None:
        node = ErrorEvent.node("n", 1, "text", tags=["node"], context={})
        assert node.error == ErrorDetail(message="text")
        assert node.scope == ErrorScope.for_node("n", 1)
        assert node.tags == ("node",)
        assert node.context == {}
        cause = ErrorDetail(message="inner")
        assert ErrorEvent.scheduler(2, cause).error is cause
        assert ErrorEvent.runner("s", 3, "x").scope == ErrorScope.for_runner("s", 3)
        assert ErrorEvent.app("x").scope == ErrorScope.for_app()

    def test_with_tag_and_context_copy(self) -> None:
        event = ErrorEvent.app("x", tags=("a",))
        tagged = event.with_tag("b")
        assert tagged.tags == ("a", "b")
        assert event.tags == ("a",)
        assert tagged.when == event.when
        with_ctx = event.with_context({"k": 1})
        assert with_ctx.context == {"k": 1}
        assert event.context is None

    def test_frozen_and_str(self) -> None:
        event = ErrorEvent.node("n", 2, "boom")
        assert str(event) == "node 'n' at step 2: boom"
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            event.tags = ()  # type: ignore[misc]

    def test_sort_key(self) -> None:
        when = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
        event = ErrorEvent.node("n", 2, "boom", when=when)
        assert event.sort_key() == (0, "n", 2, when, "boom")
        app = ErrorEvent.app("x", when=when)
        assert app.sort_key() == (3, "", 0, when, "x")


class TestWeaveError:
    def test_chain(self) -> None:
        inner = ErrorDetail(message="inner")
        outer = ErrorDetail(message="outer", cause=inner, details={"k": 1})
        assert outer.chain() == [outer, inner]
        assert inner.chain() == [inner]
        assert outer.details == {"k": 1}

    def test_from_exception_follows_causes(self) -> None:
        try:
            try:
                raise KeyError("k")
            except KeyError as exc:
                raise ValueError("bad value") from exc
        except ValueError as exc:
            described = ErrorDetail.from_exception(exc)
        assert [e.message for e in described.chain()] == [
            "ValueError: bad value",
            "KeyError: 'k'",
        ]

    def test_describe_exception(self) -> None:
        assert describe_exception(RuntimeError("x")) == "RuntimeError: x"
        assert describe_exception(RuntimeError()) == "RuntimeError"
        assert describe_exception(MissingInput("k")) == "missing expected input: k"
