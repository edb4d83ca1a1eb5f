"""The weavegraph exception family and the structured ``ErrorEvent`` record.

Every exception the library raises on purpose derives from `WeavegraphError`, so
``except weavegraph.WeavegraphError`` catches them all while ``trio.Cancelled`` and
``KeyboardInterrupt`` pass through untouched.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import attrs

if TYPE_CHECKING:
    from .state import VersionedState

ScopeKind = Literal["node", "scheduler", "runner", "app"]

_SCOPE_RANK: dict[str, int] = {"node": 0, "scheduler": 1, "runner": 2, "app": 3}


def _to_tags(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _aware(value: _dt.datetime) -> _dt.datetime:
    if not isinstance(value, _dt.datetime):
        raise StateError(f"ErrorEvent.when must be a datetime, got {value!r}")
    return value if value.tzinfo is not None else value.replace(tzinfo=_dt.UTC)


def _utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


# --------------------------------------------------------------------------- records


@attrs.frozen(kw_only=True)
class ErrorDetail:
    """A serialisable error description with an optional cause chain.

    Attributes:
        message: Human readable text.
        cause: The error that caused this one, if any.
        details: Any JSON-like value giving more context (``None`` by default).
    """

    message: str
    cause: ErrorDetail | None = None
    details: Any = None

    def chain(self) -> list[ErrorDetail]:
        """Return this error followed by its causes, outermost first."""
        out: list[ErrorDetail] = []
        current: ErrorDetail | None = self
        while current is not None:
            out.append(current)
            current = current.cause
        return out

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorDetail:
        """Describe ``exc`` (and its ``__cause__`` chain) as a `ErrorDetail`."""
        cause = exc.__cause__
        return cls(
            message=describe_exception(exc),
            cause=cls.from_exception(cause) if cause is not None else None,
        )


@attrs.frozen(kw_only=True)
class ErrorScope:
    """Where an `ErrorEvent` happened.

    Build one with `ErrorScope.node`, `ErrorScope.scheduler`, `ErrorScope.runner` or
    `ErrorScope.app`. Its JSON form is tagged by ``"scope"``, for example
    ``{"scope": "node", "kind": "parse", "step": 3}``.

    Attributes:
        scope: ``"node"``, ``"scheduler"``, ``"runner"`` or ``"app"``.
        node: The node name (``scope == "node"`` only).
        step: The superstep number (not for ``"app"``).
        session: The session id (``scope == "runner"`` only).
    """

    scope: ScopeKind = "app"
    node: str | None = None
    step: int | None = None
    session: str | None = None

    @classmethod
    def for_node(cls, node: str, step: int) -> ErrorScope:
        """The scope of an error raised by node ``node`` in superstep ``step``."""
        return cls(scope="node", node=node, step=step)

    @classmethod
    def for_scheduler(cls, step: int) -> ErrorScope:
        """The scope of an error found while scheduling superstep ``step``."""
        return cls(scope="scheduler", step=step)

    @classmethod
    def for_runner(cls, session: str, step: int) -> ErrorScope:
        """The scope of an error of the runner of ``session`` at ``step``."""
        return cls(scope="runner", session=session, step=step)

    @classmethod
    def for_app(cls) -> ErrorScope:
        """The scope of an application-level error."""
        return cls(scope="app")

    def sort_key(self) -> tuple[int, str, int]:
        """Key used by the barrier to order errors deterministically."""
        label = self.node if self.scope == "node" else self.session
        return (_SCOPE_RANK[self.scope], label or "", self.step or 0)

    def __str__(self) -> str:
        if self.scope == "node":
            return f"node {self.node!r} at step {self.step}"
        if self.scope == "scheduler":
            return f"scheduler at step {self.step}"
        if self.scope == "runner":
            return f"runner of session {self.session!r} at step {self.step}"
        return "app"


@attrs.frozen(kw_only=True)
class ErrorEvent:
    """A structured error recorded in the ``errors`` channel of the state.

    Attributes:
        when: When it happened (UTC).
        scope: Where it happened.
        error: What happened.
        tags: Free-form labels (``["node"]``, ``["node", "timeout"]`` …).
        context: Any JSON-like value; ``{}`` for framework-recorded node failures.
    """

    error: ErrorDetail
    scope: ErrorScope = attrs.field(factory=ErrorScope)
    when: _dt.datetime = attrs.field(factory=_utcnow, converter=_aware)
    tags: tuple[str, ...] = attrs.field(default=(), converter=_to_tags)
    context: Any = None

    @classmethod
    def node(
        cls, node: str, step: int, error: ErrorDetail | str, **kwargs: Any
    ) -> ErrorEvent:
        """An error of node ``node`` at ``step``; ``error`` may be plain text."""
        return cls(scope=ErrorScope.for_node(node, step), error=_weave(error), **kwargs)

    @classmethod
    def scheduler(
        cls, step: int, error: ErrorDetail | str, **kwargs: Any
    ) -> ErrorEvent:
        """An error of the scheduler at ``step``."""
        return cls(scope=ErrorScope.for_scheduler(step), error=_weave(error), **kwargs)

    @classmethod
    def runner(
        cls, session: str, step: int, error: ErrorDetail | str, **kwargs: Any
    ) -> ErrorEvent:
        """An error of the runner of ``session`` at ``step``."""
        return cls(
            scope=ErrorScope.for_runner(session, step), error=_weave(error), **kwargs
        )

    @classmethod
    def app(cls, error: ErrorDetail | str, **kwargs: Any) -> ErrorEvent:
        """An application-level error."""
        return cls(scope=ErrorScope.for_app(), error=_weave(error), **kwargs)

    def with_tag(self, tag: str) -> ErrorEvent:
        """Return a copy with ``tag`` appended to `tags`."""
        return attrs.evolve(self, tags=(*self.tags, tag))

    def with_context(self, context: Any) -> ErrorEvent:
        """Return a copy whose `context` is ``context``."""
        return attrs.evolve(self, context=context)

    def sort_key(self) -> tuple[int, str, int, _dt.datetime, str]:
        """The barrier's deterministic order: scope, name, step, time, message."""
        return (*self.scope.sort_key(), self.when, self.error.message)

    def __str__(self) -> str:
        return f"{self.scope}: {self.error.message}"


def _weave(error: ErrorDetail | str) -> ErrorDetail:
    return error if isinstance(error, ErrorDetail) else ErrorDetail(message=error)


def describe_exception(exc: BaseException) -> str:
    """Text for an exception: its message for our own errors, else ``Type: message``."""
    if isinstance(exc, WeavegraphError):
        return str(exc)
    text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


# ------------------------------------------------------------------------ exceptions


class WeavegraphError(Exception):
    """Base class of every exception weavegraph raises on purpose."""


# ------------------------------------------------------------------ input and config


class ConfigError(WeavegraphError, ValueError):
    """A configuration value is invalid (`RuntimeConfig`, a bus, a server …)."""


class EventBusConfigError(ConfigError):
    """An event bus was configured with an invalid capacity or overflow policy."""


class UsageError(WeavegraphError, RuntimeError):
    """An API was used in a way it does not support (a bus started twice …)."""


class StateError(WeavegraphError, TypeError):
    """A state, message or partial was built from values of the wrong type."""


class InvalidSessionIdError(WeavegraphError, ValueError):
    """A session id breaks the one rule for ids (see `check_session_id`)."""


class NotInTrioError(WeavegraphError, RuntimeError):
    """An async entry point was awaited outside a trio run (e.g. in asyncio)."""


class ReservedScopeError(WeavegraphError, ValueError):
    """Node code emitted an event under a scope reserved for the framework."""


class EventDecodeError(WeavegraphError, ValueError):
    """`event_from_json` was given something that is not a normalized event."""


class GraphError(WeavegraphError):
    """The graph definition is invalid; raised while building or compiling."""


class ReservedNodeNameError(GraphError):
    """A node was registered under ``START`` or ``END``, which are virtual."""


class DuplicateNodeError(GraphError):
    """Two nodes were registered under the same name."""


class InvalidNodeError(GraphError):
    """What was registered as a node is not an async callable nor a `Node`."""


class InvalidEdgeError(GraphError):
    """An edge's endpoints are malformed (wrong type, empty join, into START …)."""


class EdgeFromEndError(GraphError):
    """An edge starts at ``END``, which has no outgoing edges."""


class DuplicateEdgeError(GraphError):
    """The same edge was added twice."""


class UnknownNodeError(GraphError):
    """An edge or path map names a node that was never registered."""


class MissingEntryError(GraphError):
    """Nothing leaves ``START``: the graph has no entry."""


class CycleError(GraphError):
    """Unconditional edges form a cycle; loops need a conditional edge."""

    def __init__(self, message: str, cycle: Sequence[str]) -> None:
        super().__init__(message)
        self.cycle: tuple[str, ...] = tuple(cycle)


class UnreachableNodesError(GraphError):
    """Some registered nodes cannot be reached from ``START``."""

    def __init__(self, message: str, nodes: Sequence[str]) -> None:
        super().__init__(message)
        self.nodes: tuple[str, ...] = tuple(nodes)


class NoPathToEndError(GraphError):
    """Some registered nodes can never reach ``END``."""

    def __init__(self, message: str, nodes: Sequence[str]) -> None:
        super().__init__(message)
        self.nodes: tuple[str, ...] = tuple(nodes)


class InvalidRouterError(GraphError):
    """A conditional edge's router or path map is malformed."""


class InvalidReducerError(GraphError):
    """A reducer was registered for an unknown channel or is not callable."""


class NodeNotFound(WeavegraphError):
    """A frontier names a node the compiled graph does not have.

    This happens with hand-edited checkpoints or frontiers built by hand; routers
    that return unknown names are dropped with a warning instead.
    """

    def __init__(self, node: str, step: int) -> None:
        super().__init__(
            f"node {node!r} in the frontier of step {step} is not registered in the"
            " graph; register it with GraphBuilder.add_node or fix the frontier"
        )
        self.node = node
        self.step = step


class NodeError(WeavegraphError):
    """Base class for errors raised *by* node code; nodes may raise any exception."""


class MissingInput(NodeError):
    """A node did not find an input it needs in the state."""

    def __init__(self, what: str) -> None:
        super().__init__(f"missing expected input: {what}")
        self.what = what


class ProviderError(NodeError):
    """An external provider (an LLM API, a database …) failed."""

    def __init__(self, provider: str, message: str) -> None:
        super().__init__(f"provider error ({provider}): {message}")
        self.provider = provider


class ValidationFailed(NodeError):
    """A node rejected its input."""

    def __init__(self, message: str) -> None:
        super().__init__(f"validation failed: {message}")


class NodeTimeoutError(NodeError):
    """A node attempt exceeded its ``timeout``."""

    def __init__(self, node: str, timeout: float) -> None:
        super().__init__(f"node {node!r} timed out after {timeout:g}s")
        self.node = node
        self.timeout = timeout


class NodeOutputError(WeavegraphError):
    """A node returned something other than a `NodePartial` or ``None``."""


class RouterError(WeavegraphError):
    """A router returned something that is not a node name, ``END`` or a list."""


class ReducerError(WeavegraphError):
    """A reducer raised or returned a value of the wrong type."""


class WorkflowError(WeavegraphError):
    """A run failed; `error_event` is what was recorded in the errors channel.

    Attributes:
        error_event: The `ErrorEvent` appended to the state's errors channel.
        state: The state after the failure was recorded (the failing step's node
            outputs are discarded).
        session_id: The session of the run.
        step: The superstep that failed.
    """

    def __init__(
        self,
        error_event: ErrorEvent,
        *,
        state: VersionedState | None = None,
        session_id: str = "",
        step: int = 0,
    ) -> None:
        super().__init__(
            f"workflow failed in {error_event.scope}: {error_event.error.message}"
        )
        self.error_event = error_event
        self.state = state
        self.session_id = session_id
        self.step = step


class StepLimitExceeded(WorkflowError):
    """The run did not finish within ``RuntimeConfig.max_steps`` supersteps."""


class CheckpointError(WeavegraphError):
    """A checkpoint could not be stored or read (corrupt row, wrong schema …)."""


class CheckpointConflict(CheckpointError):
    """Another writer stored a step of the session first; this write lost."""

    def __init__(
        self, session_id: str, expected: int | None, found: int | None
    ) -> None:
        super().__init__(
            f"concurrency conflict on session {session_id!r}: expected last step"
            f" {expected}, found {found}; reload the session and retry"
        )
        self.session_id = session_id
        self.expected = expected
        self.found = found


class SessionNotFound(WeavegraphError):
    """No session with that id exists in the runner or its checkpointer."""

    def __init__(self, session_id: str) -> None:
        super().__init__(
            f"session not found: {session_id!r}; create it with"
            " runner.create_session first"
        )
        self.session_id = session_id


class EventBusClosed(WeavegraphError):
    """An event was published on a bus that is closed."""


# --------------------------------------------------------------------------- runs


class RunCancelledError(WeavegraphError):
    """`Invocation.join` on a run that was cancelled before finishing."""


class InvalidEntryError(WeavegraphError):
    """An iterative session was given an entry that is not START or a node."""


class PortalClosedError(WeavegraphError):
    """The notebook portal was stopped, or its asyncio loop is gone."""


class ReplayMismatchError(WeavegraphError, AssertionError):
    """`ReplayComparison.assert_matches` found differences."""

    def __init__(self, differences: Sequence[str]) -> None:
        lines = "\n  ".join(differences)
        super().__init__(f"replay conformance mismatch:\n  {lines}")
        self.differences = tuple(differences)


# ------------------------------------------------------------------ the run queue


class QueueError(WeavegraphError):
    """The run queue refused a request, or a queued run could not be read."""


class UnknownAppError(QueueError, ConfigError):
    """A run was submitted for an app name no worker (or queue) knows."""


class RunAlreadyActive(QueueError):
    """The session already has a queued or running run; nothing was enqueued."""

    def __init__(self, session_id: str, status: str) -> None:
        super().__init__(
            f"session {session_id!r} already has a {status} run; wait for it"
            " (queue.wait) or cancel it (queue.cancel) before submitting another"
        )
        self.session_id = session_id
        self.status = status


class RunFailedError(QueueError):
    """A queued run ended with an error; ``error`` is its recorded message."""

    def __init__(self, session_id: str, error: str) -> None:
        super().__init__(f"the run of session {session_id!r} failed: {error}")
        self.session_id = session_id
        self.error = error


class LeaseLost(CheckpointConflict):
    """A worker's lease on a run expired or was taken over; its write was refused."""

    def __init__(self, session_id: str, run_id: int) -> None:
        CheckpointError.__init__(
            self,
            f"the lease on run {run_id} (session {session_id!r}) was lost: another"
            " worker owns it now, so this worker's write was refused",
        )
        self.session_id = session_id
        self.expected = None
        self.found = None
        self.run_id = run_id


# ----------------------------------------------------------------------- serving


class HTTPError(WeavegraphError):
    """A request the app refuses, answered with ``status`` and a JSON body.

    Args:
        status: The HTTP status code.
        message: Said to the client as ``{"error": message}``.
        headers: Extra response headers (``(name, value)`` byte pairs).
    """

    def __init__(
        self,
        status: int,
        message: str,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers: list[tuple[bytes, bytes]] = list(headers or ())


class AuthorizationError(HTTPError):
    """Raised by an ``authorize`` hook to refuse a request.

    Args:
        message: Said to the client as ``{"error": message}``.
        status: 401 (the client must authenticate) or 403 (it may not).
        challenge: With 401, the ``WWW-Authenticate`` header value, such as
            ``'Bearer realm="weavegraph"'``.

    Raises:
        ConfigError: ``status`` is neither 401 nor 403.
    """

    def __init__(
        self,
        message: str = "not allowed",
        *,
        status: int = 403,
        challenge: str | None = None,
    ) -> None:
        if status not in (401, 403):
            raise ConfigError(f"AuthorizationError takes 401 or 403, got {status!r}")
        headers = [(b"www-authenticate", challenge.encode())] if challenge else []
        super().__init__(status, message, headers)
