"""The pending record of a session: work of an unfinished step that is kept.

When a step fails (after its retries) or is cancelled, the partials of its
nodes that already finished, and the failure, are stored with the session as
its pending record (attached to the last committed step). Resuming runs only
the nodes that did not finish; the barrier then merges kept and new partials
in frontier order. The record is JSON-ready, with values encoded exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from .._codec import (
    converter,
    decode_value,
    encode_value,
    partial_from_json,
    partial_to_json,
)
from .._core.errors import CheckpointError, ErrorEvent, StateError
from .._core.session import Interrupt, Session
from .._core.state import NodePartial

logger = logging.getLogger("weavegraph.runner")

_VERSION = 1


def encode_partial(partial: NodePartial | None) -> dict[str, Any] | None:
    """The JSON-ready form of a node's partial (``None`` stays ``None``).

    Raises:
        StateError: its ``extra`` holds a value outside the storable domain.
    """
    return None if partial is None else partial_to_json(partial)


def decode_partial(data: Any) -> NodePartial | None:
    """Rebuild a partial from `encode_partial`'s form.

    Raises:
        StateError: ``data`` is malformed.
    """
    return None if data is None else partial_from_json(data)


def encode_pending(session: Session) -> dict[str, Any] | None:
    """The session's pending record, or ``None`` when nothing is pending.

    A finished partial that cannot be stored (a value outside the domain) is
    left out with a warning: its node runs again on resume, and the barrier
    then refuses the value with a `StateError` naming node and key.
    """
    if (
        not session.pending
        and session.error is None
        and not session.interrupts
        and not session.answers
        and not session.tasks
        and session.breakpoint_hit is None
    ):
        return None
    writes: dict[str, Any] = {}
    for node, partial in session.pending.items():
        try:
            writes[node] = encode_partial(partial)
        except StateError as exc:
            logger.warning(
                "session %s: the finished output of node %r is not kept (%s);"
                " it runs again on resume",
                session.session_id,
                node,
                exc,
            )
    error = None
    if session.error is not None:
        error = converter.unstructure(session.error, ErrorEvent)
    return {
        "version": _VERSION,
        "step": session.pending_step
        if session.pending_step is not None
        else session.step + 1,
        "writes": writes,
        "error": error,
        "interrupts": [
            {
                "id": i.id,
                "node": i.node,
                "payload": encode_value(i.payload),
                **({} if i.task is None else {"task": i.task}),
            }
            for i in session.interrupts
        ],
        "answers": {
            node: [encode_value(a) for a in answers]
            for node, answers in session.answers.items()
        },
        "tasks": {
            node: {key: encode_value(v) for key, v in results.items()}
            for node, results in session.tasks.items()
        },
        "breakpoint": session.breakpoint_hit,
    }


def _task_index(value: Any) -> int | None:
    if value is None or (type(value) is int and value >= 0):
        return value
    raise StateError(f"an interrupt's task index {value!r} is not an int >= 0")


def restore_pending(session: Session, record: Mapping[str, Any] | None) -> None:
    """Put a stored pending record back into ``session``.

    Raises:
        CheckpointError: the record is malformed (names the session and step).
    """
    session.pending = {}
    session.pending_step = None
    session.error = None
    session.interrupts = ()
    session.answers = {}
    session.tasks = {}
    session.breakpoint_hit = None
    if not record:
        return
    try:
        step = record["step"]
        if type(step) is not int or step != session.step + 1:
            raise StateError(f"its step {step!r} does not follow {session.step}")
        writes = record.get("writes") or {}
        if not isinstance(writes, Mapping):
            raise StateError("its writes are not an object")
        session.pending = {str(k): decode_partial(v) for k, v in writes.items()}
        session.pending_step = step
        error = record.get("error")
        if error is not None:
            session.error = converter.structure(error, ErrorEvent)
        session.interrupts = tuple(
            Interrupt(
                id=str(i["id"]),
                node=str(i["node"]),
                payload=decode_value(i["payload"]),
                task=_task_index(i.get("task")),
            )
            for i in record.get("interrupts") or ()
        )
        session.answers = {
            str(node): [decode_value(a) for a in answers]
            for node, answers in (record.get("answers") or {}).items()
        }
        session.tasks = {
            str(node): {str(k): decode_value(v) for k, v in results.items()}
            for node, results in (record.get("tasks") or {}).items()
        }
        hit = record.get("breakpoint")
        if hit is not None and type(hit) is not int:
            raise StateError(f"its breakpoint {hit!r} is not a step")
        session.breakpoint_hit = hit
    except (KeyError, TypeError, ValueError, AttributeError, StateError) as exc:
        raise CheckpointError(
            f"session {session.session_id!r} step {session.step}: its pending"
            f" record is malformed ({exc})"
        ) from exc
