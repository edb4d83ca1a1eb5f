"""Step items: what the ``updates`` and ``values`` stream modes add to a run.

A run always publishes its events (the ``events`` mode: node, diagnostic and
LLM events, lifecycle events included). When a stream mode asks for them, it
also publishes, at the end of every committed superstep:

* `StepUpdates` (mode ``"updates"``): every node's partial of that step, keyed
  by node name;
* `StepValues` (mode ``"values"``): the full state after that step.

They travel through the run's `EventBus` like any event, so streams, sinks, the
SSE server and replays see them, in order: a step's items come after that
step's node events and before the next step's. They are `DiagnosticEvent`
subclasses with their own ``type`` (``"updates"``, ``"values"``) and a reserved
scope (``step.updates``, ``step.values``) that node code cannot emit. A failed
or interrupted step commits nothing, so it has no items.

Their JSON form is the normalized one (five keys); ``metadata`` holds ``step``,
``session_id`` and either ``updates`` (node name → the partial's JSON form) or
``state`` (the state's JSON form). Messages keep every field (tool calls, tool
call id, name, metadata) and ``extra`` values go through the exact value
encoding, so `event_from_json` gives back an equal item.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar, Final, Literal, TypeAlias, get_args

import attrs

from .._codec import converter, state_to_json
from .._codec import partial_from_json as _partial_from_json
from .._codec import partial_to_json as partial_to_json
from .._core.errors import ConfigError, EventDecodeError, StateError
from .._core.state import NodePartial, VersionedState
from .types import DiagnosticEvent, EventType, quantize_timestamp

StreamMode: TypeAlias = Literal["events", "updates", "values"]
"""A stream mode: what a stream of a run shows."""
STREAM_MODES: tuple[StreamMode, ...] = get_args(StreamMode)
"""Every stream mode, in the order items of one step are published."""
UPDATES_SCOPE: Final = "step.updates"
"""Scope of `StepUpdates` (reserved: node code cannot emit it)."""
VALUES_SCOPE: Final = "step.values"
"""Scope of `StepValues` (reserved: node code cannot emit it)."""
STEP_ITEM_SCOPES: Final = frozenset({UPDATES_SCOPE, VALUES_SCOPE})
"""The scopes of step items."""

_EVENT_TYPES: tuple[EventType, ...] = ("node", "diagnostic", "llm")
_MODE_TYPES: dict[str, tuple[EventType, ...]] = {
    "events": _EVENT_TYPES,
    "updates": ("updates",),
    "values": ("values",),
}
_EMPTY: Mapping[str, Any] = MappingProxyType({})


def check_modes(modes: object) -> tuple[StreamMode, ...]:
    """Validate stream modes; return them once each, in `STREAM_MODES` order.

    A single mode name is accepted as well as a collection of them.

    Raises:
        ConfigError: no mode, a mode that is not a string, or an unknown mode;
            the message lists the valid ones.
    """
    valid = ", ".join(repr(m) for m in STREAM_MODES)
    names: Iterable[object]
    if isinstance(modes, str):
        names = (modes,)
    elif isinstance(modes, Iterable) and not isinstance(modes, Mapping | bytes):
        names = tuple(modes)
    else:
        raise ConfigError(
            f"stream modes are a collection of mode names ({valid}), got {modes!r}"
        )
    unknown = [repr(n) for n in names if n not in STREAM_MODES]
    if unknown:
        raise ConfigError(
            f"unknown stream mode {', '.join(unknown)}; the modes are {valid}"
        )
    chosen = tuple(m for m in STREAM_MODES if m in names)
    if not chosen:
        raise ConfigError(f"choose at least one stream mode of {valid}")
    return chosen


def mode_types(modes: Iterable[StreamMode]) -> tuple[EventType, ...]:
    """The event types a stream of ``modes`` receives (for ``subscribe(types=)``)."""
    return tuple(t for mode in modes for t in _MODE_TYPES[mode])


def combine_modes(*groups: Iterable[StreamMode]) -> tuple[StreamMode, ...]:
    """Every mode named in any of ``groups``, once, in `STREAM_MODES` order."""
    named = {mode for group in groups for mode in group}
    return tuple(m for m in STREAM_MODES if m in named)


# ------------------------------------------------------------------ partials


def partial_from_json(data: object) -> NodePartial:
    """The partial whose `partial_to_json` form is ``data``.

    Raises:
        EventDecodeError: ``data`` is not such a form.
    """
    try:
        return _partial_from_json(data)
    except StateError as exc:
        raise EventDecodeError(str(exc)) from exc


# ---------------------------------------------------------------------- items


def _read_only(value: Mapping[str, NodePartial]) -> Mapping[str, NodePartial]:
    return MappingProxyType(dict(value))


@attrs.frozen(kw_only=True, eq=True)
class StepUpdates(DiagnosticEvent):
    """The ``updates`` stream mode: what every node of one step returned.

    Published after the step committed (its barrier merged the partials), once
    per step. A node that returned ``None`` has ``NodePartial()`` (it wrote
    nothing).

    Attributes:
        step: The superstep.
        updates: Node name → its partial, in the step's frontier order.
        session_id: The run's session id.
        scope: ``"step.updates"`` (fixed).
        message: A short text naming the step and its nodes.
        timestamp: POSIX seconds when published.
        metadata: Extra facts (none by default).
    """

    type: ClassVar[EventType] = "updates"

    step: int
    updates: Mapping[str, NodePartial] = attrs.field(converter=_read_only)
    session_id: str | None = None
    scope: str = attrs.field(default=UPDATES_SCOPE, init=False)
    message: str = attrs.field()

    @message.default
    def _describe(self) -> str:
        return f"step {self.step} updates: {', '.join(self.updates) or 'none'}"

    def json_metadata(self) -> dict[str, Any]:
        out = dict(self.metadata)
        out["step"] = self.step
        if self.session_id is not None:
            out["session_id"] = self.session_id
        out["updates"] = {
            name: partial_to_json(partial) for name, partial in self.updates.items()
        }
        return out


@attrs.frozen(kw_only=True, eq=True)
class StepValues(DiagnosticEvent):
    """The ``values`` stream mode: the full state after one step.

    Attributes:
        step: The superstep.
        state: The state after it (messages, extra, errors, versions).
        session_id: The run's session id.
        scope: ``"step.values"`` (fixed).
        message: A short text naming the step.
        timestamp: POSIX seconds when published.
        metadata: Extra facts (none by default).
    """

    type: ClassVar[EventType] = "values"

    step: int
    state: VersionedState
    session_id: str | None = None
    scope: str = attrs.field(default=VALUES_SCOPE, init=False)
    message: str = attrs.field()

    @message.default
    def _describe(self) -> str:
        return f"state after step {self.step}"

    def json_metadata(self) -> dict[str, Any]:
        out = dict(self.metadata)
        out["step"] = self.step
        if self.session_id is not None:
            out["session_id"] = self.session_id
        out["state"] = state_to_json(self.state)
        return out


def step_item_from_json(
    kind: str,
    scope: str,
    message: str,
    timestamp: float,
    metadata: dict[str, Any],
) -> StepUpdates | StepValues:
    """Rebuild a step item from the parts of its normalized JSON form.

    Raises:
        EventDecodeError: the scope does not match the type, or ``metadata``
            lacks the step or its updates (state), or holds malformed ones.
    """
    expected = UPDATES_SCOPE if kind == "updates" else VALUES_SCOPE
    if scope != expected:
        raise EventDecodeError(f"a {kind!r} item has scope {expected!r}, got {scope!r}")
    step = metadata.pop("step", None)
    if isinstance(step, bool) or not isinstance(step, int):
        raise EventDecodeError(f"a {kind!r} item needs an int 'step', got {step!r}")
    session_id = metadata.pop("session_id", None)
    if session_id is not None and not isinstance(session_id, str):
        raise EventDecodeError(f"'session_id' must be a string, got {session_id!r}")
    if kind == "updates":
        raw = metadata.pop("updates", None)
        if not isinstance(raw, Mapping):
            raise EventDecodeError(
                f"an 'updates' item needs an 'updates' object, got {raw!r:.80}"
            )
        return StepUpdates(
            step=step,
            updates={str(n): partial_from_json(p) for n, p in raw.items()},
            session_id=session_id,
            message=message,
            timestamp=timestamp,
            metadata=MappingProxyType(metadata) if metadata else _EMPTY,
        )
    raw_state = metadata.pop("state", None)
    if not isinstance(raw_state, Mapping):
        raise EventDecodeError(
            f"a 'values' item needs a 'state' object, got {raw_state!r:.80}"
        )
    try:
        state = converter.structure(dict(raw_state), VersionedState)
    except Exception as exc:
        raise EventDecodeError(f"malformed state in a 'values' item: {exc}") from exc
    return StepValues(
        step=step,
        state=state,
        session_id=session_id,
        message=message,
        timestamp=timestamp,
        metadata=MappingProxyType(metadata) if metadata else _EMPTY,
    )


# ------------------------------------------------------------- the engine hook

# Items are built once per step when a mode asks: through their slots (as the
# lifecycle events are), skipping the attrs ``__init__``. ``scope`` and
# ``message`` live in `DiagnosticEvent`'s slots, the other fields in their own.
_new = object.__new__
_set_scope = DiagnosticEvent.__dict__["scope"].__set__
_set_message = DiagnosticEvent.__dict__["message"].__set__
_set_timestamp = DiagnosticEvent.__dict__["timestamp"].__set__
_set_metadata = DiagnosticEvent.__dict__["metadata"].__set__
_set_updates_step = StepUpdates.__dict__["step"].__set__
_set_updates = StepUpdates.__dict__["updates"].__set__
_set_updates_session = StepUpdates.__dict__["session_id"].__set__
_set_values_step = StepValues.__dict__["step"].__set__
_set_state = StepValues.__dict__["state"].__set__
_set_values_session = StepValues.__dict__["session_id"].__set__


def _updates_item(
    step: int, updates: dict[str, NodePartial], session_id: str, timestamp: float
) -> StepUpdates:
    item: StepUpdates = _new(StepUpdates)
    _set_scope(item, UPDATES_SCOPE)
    _set_message(item, f"step {step} updates: {', '.join(updates) or 'none'}")
    _set_timestamp(item, timestamp)
    _set_metadata(item, _EMPTY)
    _set_updates_step(item, step)
    _set_updates(item, MappingProxyType(updates))
    _set_updates_session(item, session_id)
    return item


def _values_item(
    step: int, state: VersionedState, session_id: str, timestamp: float
) -> StepValues:
    item: StepValues = _new(StepValues)
    _set_scope(item, VALUES_SCOPE)
    _set_message(item, f"state after step {step}")
    _set_timestamp(item, timestamp)
    _set_metadata(item, _EMPTY)
    _set_values_step(item, step)
    _set_state(item, state)
    _set_values_session(item, session_id)
    return item


StepItemEmitter = Callable[
    [
        Callable[[DiagnosticEvent], None],
        float,
        str,
        int,
        Sequence[str],
        Sequence[NodePartial | None],
        VersionedState,
    ],
    None,
]
"""What `step_item_emitter` returns: called with ``(emit, timestamp, session_id,
step, nodes, partials, state)`` after each committed step."""


def step_item_emitter(modes: Iterable[StreamMode]) -> StepItemEmitter | None:
    """The engine's step-end hook for ``modes``; ``None`` when they need no items.

    The returned function builds only the items its modes ask for.
    """
    chosen = set(modes)
    updates = "updates" in chosen
    values = "values" in chosen
    if not updates and not values:
        return None
    empty = NodePartial.EMPTY

    def emit_items(
        emit: Callable[[DiagnosticEvent], None],
        timestamp: float,
        session_id: str,
        step: int,
        nodes: Sequence[str],
        partials: Sequence[NodePartial | None],
        state: VersionedState,
    ) -> None:
        stamp = quantize_timestamp(timestamp)
        if updates:
            by_node = {
                name: empty if partial is None else partial
                for name, partial in zip(nodes, partials, strict=True)
            }
            emit(_updates_item(step, by_node, session_id, stamp))
        if values:
            emit(_values_item(step, state, session_id, stamp))

    return emit_items
