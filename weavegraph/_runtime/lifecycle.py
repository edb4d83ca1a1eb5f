"""Lifecycle events: what the runtime says about every node attempt and step.

They go through the run's bus like node events, so streams, sinks, the SSE
server and the viewer see them. Each is a `DiagnosticEvent` with a reserved
scope (node code cannot emit these) and structured metadata:

==============  ===============================================================
``node.start``  ``node``, ``step``, ``attempt``, ``task`` (a sent task's index,
                or ``None``), ``session_id``
``node.end``    the same, plus ``duration`` (seconds) and ``channels`` (the
                channels its partial writes: ``messages``, ``extra``,
                ``errors``, ``frontier``)
``node.retry``  the same as start, plus ``error`` (text) and ``delay`` (seconds
                before the next attempt)
``node.error``  the same as start, plus ``error`` (text); the attempt failed
                and will not be retried
``step.end``    ``step``, ``ran`` (nodes, in order), ``updated`` (channels whose
                version grew), ``next`` (the next frontier), ``session_id``
``session.*``   ``session.interrupt`` (a pending question), ``session.resume``
                (a run continues a paused, failed or stopped session) and
                ``session.fork`` (a session forked from another): the runner
                sends these, see `weavegraph._runtime.runner`
==============  ===============================================================

They are on by default and built only while a stream or sink would receive
them (the engine asks `EventBus.listening_for` once per step: a stream
filtered to other types or scopes, such as a token stream or an ``updates``
stream, does not count);
``RuntimeConfig(lifecycle_events=False)`` turns them off. Their JSON forms are
listed in docs/events.md; their cost is measured by bench/engine.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final

from .._core.state import NodePartial
from ..events.types import DiagnosticEvent, quantize_timestamp

NODE_START: Final = "node.start"
NODE_END: Final = "node.end"
NODE_RETRY: Final = "node.retry"
NODE_ERROR: Final = "node.error"
STEP_END: Final = "step.end"
INTERRUPT: Final = "session.interrupt"
RESUME: Final = "session.resume"
FORK: Final = "session.fork"

ENGINE_SCOPES: Final = (NODE_START, NODE_END, NODE_RETRY, NODE_ERROR, STEP_END)
"""The lifecycle scopes the engine emits (per node attempt and per step)."""
LIFECYCLE_SCOPES: Final = frozenset(
    {NODE_START, NODE_END, NODE_RETRY, NODE_ERROR, STEP_END, INTERRUPT, RESUME, FORK}
)
"""Scopes of the runtime's lifecycle events, refused to node code."""


_new = object.__new__
_DIAGNOSTIC_SLOTS = DiagnosticEvent.__dict__
_set_scope = _DIAGNOSTIC_SLOTS["scope"].__set__
_get_message = _DIAGNOSTIC_SLOTS["message"].__get__
_set_message = _DIAGNOSTIC_SLOTS["message"].__set__
_get_timestamp = _DIAGNOSTIC_SLOTS["timestamp"].__get__
_set_timestamp = _DIAGNOSTIC_SLOTS["timestamp"].__set__
_get_metadata = _DIAGNOSTIC_SLOTS["metadata"].__get__
_set_metadata = _DIAGNOSTIC_SLOTS["metadata"].__set__

# Up to three of these are built per node attempt while anyone listens, and
# most are read by a stream that looks at the scope and little else. So a
# lifecycle event is built with its scope and the facts it was made from (one
# tuple); its message, timestamp and metadata are made from them the first time
# they are read, and kept. Nothing else holds the facts: they are the caller's
# values, never changed after the event is built.


class LifecycleEvent(DiagnosticEvent):
    """A lifecycle `DiagnosticEvent` whose message, timestamp and metadata are lazy.

    It behaves as the `DiagnosticEvent` with the same fields in every way users
    see (equality with a decoded event, hashing, ``repr``, JSON, ``attrs.evolve``);
    only its class is a subclass. Each kind of event is a subclass that says how
    its fields are made from ``_facts``, whose first item is the raw timestamp.
    """

    __slots__ = ("_facts",)
    _facts: tuple[Any, ...]

    def _make_message(self) -> str:
        raise NotImplementedError

    def _make_metadata(self) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def message(self) -> str:
        """The event's text, made from its facts the first time it is read."""
        try:
            return _get_message(self)  # type: ignore[no-any-return]
        except AttributeError:
            message = self._make_message()
            _set_message(self, message)
            return message

    @message.setter
    def message(self, value: str) -> None:
        _set_message(self, value)

    @property
    def timestamp(self) -> float:
        """POSIX seconds when emitted, in whole microseconds."""
        try:
            return _get_timestamp(self)  # type: ignore[no-any-return]
        except AttributeError:
            timestamp = quantize_timestamp(self._facts[0])
            _set_timestamp(self, timestamp)
            return timestamp

    @timestamp.setter
    def timestamp(self, value: float) -> None:
        _set_timestamp(self, value)

    @property
    def metadata(self) -> Mapping[str, Any]:
        """The structured facts, made the first time they are read."""
        try:
            return _get_metadata(self)  # type: ignore[no-any-return]
        except AttributeError:
            metadata = MappingProxyType(self._make_metadata())  # read-only
            _set_metadata(self, metadata)
            return metadata

    @metadata.setter
    def metadata(self, value: Mapping[str, Any]) -> None:
        _set_metadata(self, value)

    def __eq__(self, other: object) -> bool:
        # Tried first in both orders (a subclass's __eq__ is), so a lifecycle
        # event equals the plain DiagnosticEvent decoded from its JSON.
        if not isinstance(other, DiagnosticEvent):
            return NotImplemented
        return (self.scope, self.message, self.timestamp, self.metadata) == (
            other.scope,
            other.message,
            other.timestamp,
            other.metadata,
        )

    __hash__ = DiagnosticEvent.__hash__

    def __repr__(self) -> str:
        return (
            f"DiagnosticEvent(scope={self.scope!r}, message={self.message!r},"
            f" timestamp={self.timestamp!r}, metadata={self.metadata!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # As the plain event it equals (a read-only mapping does not pickle).
        metadata = dict(self.metadata)
        return (_plain, (self.scope, self.message, self.timestamp, metadata))


def _plain(
    scope: str, message: str, timestamp: float, metadata: Mapping[str, Any]
) -> DiagnosticEvent:
    return DiagnosticEvent(
        scope=scope, message=message, timestamp=timestamp, metadata=metadata
    )


def _attempt_metadata(facts: tuple[Any, ...]) -> dict[str, Any]:
    # facts: (timestamp, session_id, node, step, attempt, task, path, ...)
    return {
        "node": facts[2],
        "step": facts[3],
        "attempt": facts[4],
        "task": facts[5],
        "session_id": facts[1],
    }


def _with_path(out: dict[str, Any], path: list[str] | None) -> dict[str, Any]:
    if path is not None:
        out["path"] = path
    return out


class _NodeStart(LifecycleEvent):
    __slots__ = ()

    def _make_message(self) -> str:
        node: str = self._facts[2]
        attempt = self._facts[4]
        if attempt == 1:
            return node + " started"
        return f"{node} started (attempt {attempt})"

    def _make_metadata(self) -> dict[str, Any]:
        facts = self._facts
        return _with_path(_attempt_metadata(facts), facts[6])


class _NodeEnd(LifecycleEvent):
    __slots__ = ()

    def _make_message(self) -> str:
        node: str = self._facts[2]
        return node + " finished"

    def _make_metadata(self) -> dict[str, Any]:
        facts = self._facts
        out = _attempt_metadata(facts)
        out["duration"] = facts[7]
        out["channels"] = channels_of(facts[8])
        return _with_path(out, facts[6])


class _NodeRetry(LifecycleEvent):
    __slots__ = ()

    def _make_message(self) -> str:
        facts = self._facts
        return (
            f"{facts[2]} attempt {facts[4]} failed ({facts[7]});"
            f" retrying in {facts[8]:.3g}s"
        )

    def _make_metadata(self) -> dict[str, Any]:
        facts = self._facts
        out = _attempt_metadata(facts)
        out["error"] = facts[7]
        out["delay"] = facts[8]
        return _with_path(out, facts[6])


class _NodeError(LifecycleEvent):
    __slots__ = ()

    def _make_message(self) -> str:
        return f"{self._facts[2]} failed: {self._facts[7]}"

    def _make_metadata(self) -> dict[str, Any]:
        facts = self._facts
        out = _attempt_metadata(facts)
        out["error"] = facts[7]
        return _with_path(out, facts[6])


class _StepEnd(LifecycleEvent):
    __slots__ = ()

    def _make_message(self) -> str:
        return f"step {self._facts[2]} ran {', '.join(self._facts[3]) or 'nothing'}"

    def _make_metadata(self) -> dict[str, Any]:
        # facts: (timestamp, session_id, step, ran, updated, next, path)
        facts = self._facts
        out = {
            "step": facts[2],
            "ran": list(facts[3]),
            "updated": list(facts[4]),
            "next": list(facts[5]),
            "session_id": facts[1],
        }
        return _with_path(out, facts[6])


_set_facts = LifecycleEvent.__dict__["_facts"].__set__


def _build(
    cls: type[LifecycleEvent], scope: str, facts: tuple[Any, ...]
) -> LifecycleEvent:
    event = _new(cls)
    _set_scope(event, scope)
    _set_facts(event, facts)
    return event


def node_start(
    timestamp: float,
    session_id: str,
    node: str,
    step: int,
    attempt: int,
    task: int | None,
    path: list[str] | None = None,
) -> DiagnosticEvent:
    """``node.start``: an attempt of ``node`` begins.

    ``path``: a subgraph node's path (its metadata then carries ``path``).
    """
    event = _new(_NodeStart)
    _set_scope(event, NODE_START)
    _set_facts(event, (timestamp, session_id, node, step, attempt, task, path))
    return event


def channels_of(partial: NodePartial | None) -> list[str]:
    """The channels a partial writes."""
    if partial is None:
        return []
    out = []
    if partial.messages:
        out.append("messages")
    if partial.extra:
        out.append("extra")
    if partial.errors:
        out.append("errors")
    if partial.frontier is not None:
        out.append("frontier")
    return out


def node_end(
    timestamp: float,
    session_id: str,
    node: str,
    step: int,
    attempt: int,
    task: int | None,
    duration: float,
    partial: NodePartial | None,
    path: list[str] | None = None,
) -> DiagnosticEvent:
    """``node.end``: an attempt of ``node`` returned its partial."""
    event = _new(_NodeEnd)
    _set_scope(event, NODE_END)
    _set_facts(
        event,
        (timestamp, session_id, node, step, attempt, task, path, duration, partial),
    )
    return event


def node_retry(
    timestamp: float,
    session_id: str,
    node: str,
    step: int,
    attempt: int,
    task: int | None,
    error: str,
    delay: float,
    path: list[str] | None = None,
) -> DiagnosticEvent:
    """``node.retry``: an attempt failed and the node runs again after ``delay``."""
    return _build(
        _NodeRetry,
        NODE_RETRY,
        (timestamp, session_id, node, step, attempt, task, path, error, delay),
    )


def node_error(
    timestamp: float,
    session_id: str,
    node: str,
    step: int,
    attempt: int,
    task: int | None,
    error: str,
    path: list[str] | None = None,
) -> DiagnosticEvent:
    """``node.error``: an attempt failed and the node will not be retried."""
    return _build(
        _NodeError,
        NODE_ERROR,
        (timestamp, session_id, node, step, attempt, task, path, error),
    )


def step_end(
    timestamp: float,
    session_id: str,
    step: int,
    ran: Sequence[str],
    updated: Sequence[str],
    next_frontier: Sequence[str],
    path: list[str] | None = None,
) -> DiagnosticEvent:
    """``step.end``: a superstep committed.

    ``ran``, ``updated`` and ``next_frontier`` are kept as given (the event's
    metadata copies them when first read): the caller does not change them.
    """
    event = _new(_StepEnd)
    _set_scope(event, STEP_END)
    _set_facts(event, (timestamp, session_id, step, ran, updated, next_frontier, path))
    return event
