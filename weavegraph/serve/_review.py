"""Human review over HTTP: reading the bodies of resume, edit and fork requests,
and the JSON form of a session's state.

Pure functions: each takes parsed JSON (or the runtime's records) and returns
what the routes need, raising `HTTPError` (a 4xx with a message the client can
act on) for anything it cannot use. Values (interrupt payloads, resume values,
``extra`` values) go through ``encode_value``/``decode_value``, so tagged values
round-trip exactly.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from .._codec import converter, decode_value, encode_value, loads, state_to_json
from .._core.errors import ConfigError, HTTPError, InvalidSessionIdError, StateError
from .._core.session import Interrupt, Resume, check_session_id
from .._core.state import Message, NodePartial
from .._runtime.runner import SessionState
from ..events.steps import StreamMode, check_modes

MAX_HISTORY_PAGE = 100
"""The most steps ``GET /runs/{id}/history`` answers at once."""
HISTORY_PAGE = 20
"""Steps per page when the client does not say."""


def json_object(body: bytes, what: str) -> dict[str, Any]:
    """``body`` parsed as a JSON object (an empty body is ``{}``)."""
    if not body.strip():
        return {}
    try:
        data = loads(body)
    except ValueError as exc:
        raise HTTPError(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise HTTPError(400, f"the body of {what} must be a JSON object")
    return data


def check_keys(data: Mapping[str, Any], allowed: Collection[str], what: str) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise HTTPError(
            400, f"unknown keys in {what}: {unknown}; it takes {sorted(allowed)}"
        )


def value_from_json(data: Any, where: str) -> Any:
    """The value whose ``encode_value`` form is ``data``."""
    try:
        return decode_value(data)
    except StateError as exc:
        raise HTTPError(400, f"{where}: {exc}") from None


def message_from_json(item: Any) -> Message:
    """A ``{"role", "content"}`` object (a plain string is the user's)."""
    if isinstance(item, str):
        item = {"role": "user", "content": item}
    if not isinstance(item, dict):
        raise HTTPError(400, f"a message is a {{role, content}} object, got {item!r}")
    check_keys(item, ("role", "content"), "a message")
    content: Any = item.get("content")
    try:
        return Message(item.get("role", "user"), content)
    except (StateError, TypeError, ValueError) as exc:
        raise HTTPError(400, f"invalid message {item!r}: {exc}") from None


def check_roles(messages: Collection[Message], roles: frozenset[str] | None) -> None:
    """403 for a message whose role clients may not send."""
    if roles is None:
        return
    for message in messages:
        role = str(message.role)
        if role not in roles:
            raise HTTPError(
                403,
                f"clients may not send {role!r} messages; this server accepts"
                f" the roles {sorted(roles)}",
            )


def breakpoints(
    data: Mapping[str, Any], nodes: Collection[str]
) -> dict[str, tuple[str, ...]]:
    """``interrupt_before``/``interrupt_after`` of a body, checked against ``nodes``."""
    found: dict[str, tuple[str, ...]] = {}
    for key in ("interrupt_before", "interrupt_after"):
        if key not in data:
            continue
        value = data[key]
        if value == "*":
            value = ["*"]
        if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
            raise HTTPError(400, f"'{key}' must be a list of node names, or \"*\"")
        unknown = [n for n in value if n != "*" and n not in nodes]
        if unknown:
            raise HTTPError(
                400,
                f"'{key}' names nodes the graph does not have: {unknown}; its"
                f" nodes are {sorted(nodes)}",
            )
        found[key] = tuple(value)
    return found


# ---------------------------------------------------------------- resuming


def resume_from_json(data: Mapping[str, Any]) -> Resume:
    """The `Resume` of a ``POST /runs/{id}/resume`` body (already an object)."""
    if "value" in data and "values" in data:
        raise HTTPError(
            400,
            "send either 'value' (the answer to the one pending interrupt) or"
            " 'values' (answers by interrupt id), not both",
        )
    if "values" in data:
        values = data["values"]
        if not isinstance(values, dict) or not values:
            raise HTTPError(
                400, "'values' must be a non-empty object of interrupt id to answer"
            )
        return Resume(
            values={
                key: value_from_json(answer, f"the answer to {key!r}")
                for key, answer in values.items()
            }
        )
    if "value" in data:
        return Resume(value_from_json(data["value"], "'value'"))
    return Resume()


def check_resume(
    resume: Resume,
    session_id: str,
    pending: Collection[Interrupt],
    *,
    completed: bool,
) -> None:
    """Refuse a resume that cannot apply to the session as it is stored."""
    if completed and not pending:
        raise HTTPError(
            409,
            f"session {session_id!r} is complete: there is nothing to resume"
            " (POST /runs with new messages starts a new turn)",
        )
    ids = [i.id for i in pending]
    if resume.values is not None:
        unknown = sorted(set(resume.values) - set(ids))
        if unknown:
            raise HTTPError(
                400,
                f"unknown interrupt ids {unknown}: session {session_id!r} is"
                f" paused on {ids or 'no interrupt'}",
            )
        return
    if len(ids) > 1 and resume.value is not None:
        raise HTTPError(
            400,
            f"session {session_id!r} is paused on {len(ids)} interrupts {ids}:"
            " answer each by id with 'values'",
        )
    if not ids and resume.value is not None:
        raise HTTPError(
            409,
            f"session {session_id!r} has no pending interrupt to take a value;"
            " send {} to resume it",
        )


# ------------------------------------------------------------------ editing


def update_from_json(
    data: Mapping[str, Any],
    nodes: Collection[str],
    roles: frozenset[str] | None,
) -> tuple[NodePartial, str | None]:
    """The partial and ``as_node`` of a ``PATCH /runs/{id}/state`` body."""
    check_keys(data, ("update", "as_node"), "a state update")
    update = data.get("update")
    if not isinstance(update, dict):
        raise HTTPError(
            400,
            'a state update is {"update": {"messages": [...], "extra": {...}},'
            ' "as_node": "name"}: \'update\' must be an object',
        )
    check_keys(update, ("messages", "extra"), "'update'")
    messages = update.get("messages")
    if messages is not None and not isinstance(messages, list):
        raise HTTPError(400, "'messages' must be a list of {role, content} objects")
    parsed = [message_from_json(m) for m in messages or ()]
    check_roles(parsed, roles)
    extra = update.get("extra")
    if extra is not None and not isinstance(extra, dict):
        raise HTTPError(400, "'extra' must be a JSON object")
    decoded = (
        None
        if extra is None
        else {k: value_from_json(v, f"extra[{k!r}]") for k, v in extra.items()}
    )
    as_node = data.get("as_node")
    if as_node is not None and (not isinstance(as_node, str) or as_node not in nodes):
        raise HTTPError(
            400,
            f"'as_node' must name a node of the graph, got {as_node!r}; its nodes"
            f" are {sorted(nodes)}",
        )
    if not parsed and not decoded and as_node is None:
        raise HTTPError(
            400,
            "the update is empty: give 'messages' or 'extra' (or 'as_node', to"
            " go on as if that node had run)",
        )
    try:
        partial = NodePartial(messages=parsed or None, extra=decoded)
    except (StateError, TypeError, ValueError) as exc:
        raise HTTPError(400, f"invalid state update: {exc}") from None
    return partial, as_node


def fork_from_json(data: Mapping[str, Any]) -> tuple[int, str]:
    """The step and new session id of a ``POST /runs/{id}/fork`` body."""
    check_keys(data, ("step", "session_id"), "a fork request")
    step = data.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise HTTPError(400, f"'step' must be a step number (int >= 0), got {step!r}")
    try:
        new_id = check_session_id(data.get("session_id"))
    except InvalidSessionIdError as exc:
        raise HTTPError(400, f"'session_id' of the fork: {exc}") from None
    return step, new_id


def page_from_query(query: Mapping[str, str]) -> tuple[int, int, bool]:
    """``limit``, ``offset`` and ``states`` of ``GET /runs/{id}/history``."""
    numbers = {}
    for key, default, low in (("limit", HISTORY_PAGE, 1), ("offset", 0, 0)):
        text = query.get(key)
        if text is None:
            numbers[key] = default
            continue
        if not text.isdigit() or len(text) > 9 or int(text) < low:
            raise HTTPError(
                400, f"'{key}' must be a whole number >= {low}, got {text!r}"
            )
        numbers[key] = int(text)
    if numbers["limit"] > MAX_HISTORY_PAGE:
        raise HTTPError(
            400, f"'limit' is at most {MAX_HISTORY_PAGE}, got {numbers['limit']}"
        )
    states = query.get("states", "false").lower()
    if states not in ("true", "false", "1", "0"):
        raise HTTPError(400, f"'states' is true or false, got {states!r}")
    return numbers["limit"], numbers["offset"], states in ("true", "1")


def step_from_query(query: Mapping[str, str]) -> int | None:
    """``?step=N`` of ``GET /runs/{id}/state`` (``None`` when absent)."""
    text = query.get("step")
    if text is None:
        return None
    if not text.isdigit() or len(text) > 18:
        raise HTTPError(400, f"'step' must be a step number (int >= 0), got {text!r}")
    return int(text)


def modes_from_query(query: Mapping[str, str]) -> tuple[StreamMode, ...]:
    """``?modes=events,updates,values``: what a stream shows (default: events).

    Names are separated by commas; spaces around them are ignored.
    """
    text = query.get("modes")
    if text is None:
        return ("events",)
    names = [name.strip() for name in text.split(",")]
    try:
        return check_modes([name for name in names if name])
    except ConfigError as exc:
        raise HTTPError(400, f"?modes={text[:80]!r}: {exc}") from None


# ------------------------------------------------------------------ showing


def interrupt_to_json(interrupt: Interrupt) -> dict[str, Any]:
    return {
        "id": interrupt.id,
        "node": interrupt.node,
        "payload": encode_value(interrupt.payload, "payload"),
    }


def status_of(view: SessionState) -> str:
    """What a stored session is waiting for, in one word."""
    if view.interrupts:
        return "interrupted"
    if view.completed:
        return "completed"
    if view.error is not None:
        return "error"
    return "stored"


def session_to_json(view: SessionState, status: str | None = None) -> dict[str, Any]:
    """The JSON form of a `SessionState` (``status`` defaults to `status_of`)."""
    forked = view.forked_from
    return {
        "session_id": view.session_id,
        "status": status or status_of(view),
        "step": view.step,
        "state": state_to_json(view.state),
        "next": list(view.next),
        "interrupts": [interrupt_to_json(i) for i in view.interrupts],
        "pending_writes": sorted(view.pending_writes),
        "error": None if view.error is None else converter.unstructure(view.error),
        "parent_step": view.parent_step,
        "forked_from": (
            None if forked is None else {"session_id": forked[0], "step": forked[1]}
        ),
    }


def history_entry(view: SessionState, *, with_state: bool) -> dict[str, Any]:
    """One step of ``GET /runs/{id}/history``: a summary, or all of it."""
    if with_state:
        return session_to_json(view)
    state = view.state
    last = state.messages[-1] if state.messages else None
    return {
        "step": view.step,
        "parent_step": view.parent_step,
        "status": status_of(view),
        "next": list(view.next),
        "interrupts": [interrupt_to_json(i) for i in view.interrupts],
        "messages": len(state.messages),
        "last_message": (
            None if last is None else {"role": str(last.role), "content": last.content}
        ),
        "extra_keys": sorted(state.extra),
    }
