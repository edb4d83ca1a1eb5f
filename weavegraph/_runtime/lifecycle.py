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

They are on by default and built only while a stream or sink listens (the
engine checks `EventBus.listening` once per attempt and per step);
``RuntimeConfig(lifecycle_events=False)`` turns them off. Their JSON forms are
listed in docs/events.md; their cost is measured by bench/engine.py.
"""

from __future__ import annotations

from collections.abc import Sequence
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

LIFECYCLE_SCOPES: Final = frozenset(
    {NODE_START, NODE_END, NODE_RETRY, NODE_ERROR, STEP_END, INTERRUPT, RESUME, FORK}
)
"""Scopes of the runtime's lifecycle events, refused to node code."""


_new = object.__new__
_set_scope = DiagnosticEvent.__dict__["scope"].__set__
_set_message = DiagnosticEvent.__dict__["message"].__set__
_set_timestamp = DiagnosticEvent.__dict__["timestamp"].__set__
_set_metadata = DiagnosticEvent.__dict__["metadata"].__set__

# Two of these are built per node attempt while anyone listens: each is made
# right here through the event's slots (like ``ctx.emit``'s node events), with
# a plain dict as its metadata (nothing else holds it) and a message that
# needs no number formatting. Timestamps are whole microseconds.


def node_start(
    timestamp: float,
    session_id: str,
    node: str,
    step: int,
    attempt: int,
    task: int | None,
) -> DiagnosticEvent:
    """``node.start``: an attempt of ``node`` begins."""
    event = _new(DiagnosticEvent)
    _set_scope(event, NODE_START)
    _set_message(
        event,
        node + " started" if attempt == 1 else f"{node} started (attempt {attempt})",
    )
    _set_timestamp(event, quantize_timestamp(timestamp))
    _set_metadata(
        event,
        {
            "node": node,
            "step": step,
            "attempt": attempt,
            "task": task,
            "session_id": session_id,
        },
    )
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
) -> DiagnosticEvent:
    """``node.end``: an attempt of ``node`` returned its partial."""
    event = _new(DiagnosticEvent)
    _set_scope(event, NODE_END)
    _set_message(event, node + " finished")
    _set_timestamp(event, quantize_timestamp(timestamp))
    _set_metadata(
        event,
        {
            "node": node,
            "step": step,
            "attempt": attempt,
            "task": task,
            "session_id": session_id,
            "duration": duration,
            "channels": [] if partial is None else channels_of(partial),
        },
    )
    return event


def _event(
    scope: str, message: str, metadata: dict[str, Any], timestamp: float
) -> DiagnosticEvent:
    event = _new(DiagnosticEvent)
    _set_scope(event, scope)
    _set_message(event, message)
    _set_timestamp(event, quantize_timestamp(timestamp))
    _set_metadata(event, metadata)
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
) -> DiagnosticEvent:
    """``node.retry``: an attempt failed and the node runs again after ``delay``."""
    return _event(
        NODE_RETRY,
        f"{node} attempt {attempt} failed ({error}); retrying in {delay:.3g}s",
        {
            "node": node,
            "step": step,
            "attempt": attempt,
            "task": task,
            "session_id": session_id,
            "error": error,
            "delay": delay,
        },
        timestamp,
    )


def node_error(
    timestamp: float,
    session_id: str,
    node: str,
    step: int,
    attempt: int,
    task: int | None,
    error: str,
) -> DiagnosticEvent:
    """``node.error``: an attempt failed and the node will not be retried."""
    return _event(
        NODE_ERROR,
        f"{node} failed: {error}",
        {
            "node": node,
            "step": step,
            "attempt": attempt,
            "task": task,
            "session_id": session_id,
            "error": error,
        },
        timestamp,
    )


def step_end(
    timestamp: float,
    session_id: str,
    step: int,
    ran: Sequence[str],
    updated: Sequence[str],
    next_frontier: Sequence[str],
) -> DiagnosticEvent:
    """``step.end``: a superstep committed."""
    event = _new(DiagnosticEvent)
    _set_scope(event, STEP_END)
    _set_message(event, f"step {step} ran {', '.join(ran) or 'nothing'}")
    _set_timestamp(event, quantize_timestamp(timestamp))
    _set_metadata(
        event,
        {
            "step": step,
            "ran": list(ran),
            "updated": list(updated),
            "next": list(next_frontier),
            "session_id": session_id,
        },
    )
    return event
