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

    def json_metadata(self) -> dict[str, Any]:
        """The ``metadata`` object of the JSON form (made afresh, not kept,
        when the metadata was not read yet: encoding needs no read-only copy)."""
        try:
            return dict(_get_metadata(self))
        except AttributeError:
            return self._make_metadata()

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


def _attempt_metadata(attempt: tuple[Any, ...]) -> dict[str, Any]:
    # attempt: a node.start's facts (timestamp, session_id, node, step,
    # attempt, task, path); the attempt's later events share them.
    return {
        "node": attempt[2],
        "step": attempt[3],
        "attempt": attempt[4],
        "task": attempt[5],
        "session_id": attempt[1],
    }


def _with_path(out: dict[str, Any], attempt: tuple[Any, ...]) -> dict[str, Any]:
    path = attempt[6]
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
        return _with_path(_attempt_metadata(facts), facts)


class _NodeEnd(LifecycleEvent):
    # facts: (timestamp, the attempt's, duration, channels)
    __slots__ = ()

    def _make_message(self) -> str:
        node: str = self._facts[1][2]
        return node + " finished"

    def _make_metadata(self) -> dict[str, Any]:
        _, attempt, duration, channels = self._facts
        out = _attempt_metadata(attempt)
        out["duration"] = duration
        out["channels"] = list(channels)
        return _with_path(out, attempt)


class _NodeRetry(LifecycleEvent):
    # facts: (timestamp, the attempt's, error, delay)
    __slots__ = ()

    def _make_message(self) -> str:
        _, attempt, error, delay = self._facts
        return (
            f"{attempt[2]} attempt {attempt[4]} failed ({error});"
            f" retrying in {delay:.3g}s"
        )

    def _make_metadata(self) -> dict[str, Any]:
        _, attempt, error, delay = self._facts
        out = _attempt_metadata(attempt)
        out["error"] = error
        out["delay"] = delay
        return _with_path(out, attempt)


class _NodeError(LifecycleEvent):
    # facts: (timestamp, the attempt's, error)
    __slots__ = ()

    def _make_message(self) -> str:
        _, attempt, error = self._facts
        return f"{attempt[2]} failed: {error}"

    def _make_metadata(self) -> dict[str, Any]:
        _, attempt, error = self._facts
        out = _attempt_metadata(attempt)
        out["error"] = error
        return _with_path(out, attempt)


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
        if facts[6] is not None:
            out["path"] = facts[6]
        return out


_get_facts = LifecycleEvent.__dict__["_facts"].__get__
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
    start: DiagnosticEvent,
    timestamp: float,
    duration: float,
    partial: NodePartial | None,
) -> DiagnosticEvent:
    """``node.end``: the attempt ``start`` began returned its partial.

    ``start`` is the attempt's `node_start` event. The event keeps the names
    of the channels the partial writes, not the partial: a buffered event
    holds no node output alive.
    """
    channels = () if partial is None else channels_of(partial)
    event = _new(_NodeEnd)
    _set_scope(event, NODE_END)
    _set_facts(event, (timestamp, _get_facts(start), duration, channels))
    return event


def node_retry(
    start: DiagnosticEvent, timestamp: float, error: str, delay: float
) -> DiagnosticEvent:
    """``node.retry``: the attempt failed; the node runs again after ``delay``."""
    return _build(_NodeRetry, NODE_RETRY, (timestamp, _get_facts(start), error, delay))


def node_error(start: DiagnosticEvent, timestamp: float, error: str) -> DiagnosticEvent:
    """``node.error``: the attempt failed and the node will not be retried."""
    return _build(_NodeError, NODE_ERROR, (timestamp, _get_facts(start), error))


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
