"""Event records: `NodeEvent`, `DiagnosticEvent`, `LLMEvent`, and their JSON form.

Events are frozen attrs classes. ``timestamp`` is POSIX seconds (UTC) taken when
the event is created, i.e. when it is emitted, in whole microseconds: every way of
building an event rounds it (`quantize_timestamp`), so the float and its RFC 3339
text name the same instant and ``event_from_json(e.to_json()) == e`` holds
exactly. `BaseEvent.datetime` gives it as an aware ``datetime``. The normalized
JSON form has exactly five keys: ``type``, ``scope``, ``message``, ``timestamp``
(RFC 3339, always six fractional digits) and ``metadata``.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from time import time as _time
from time import time_ns as _time_ns
from types import MappingProxyType
from typing import Any, ClassVar, Literal, TypeAlias, get_args

import attrs

from .._codec import dumps
from .._core.errors import EventDecodeError

STREAM_END_SCOPE = "__weavegraph_stream_end__"
"""Scope of the one diagnostic that ends every streamed run."""
INVOCATION_END_SCOPE = "__weavegraph_invocation_end__"
"""Scope of the diagnostic that ends one invocation of an iterative session."""
DIAGNOSTIC_SCOPE = "__weavegraph_diagnostic__"
"""Default scope of framework diagnostics."""
RESERVED_SCOPE_PREFIX = "__weavegraph_"
"""Scopes starting with this belong to the framework; node code cannot emit them."""
SENTINEL_SCOPES = frozenset({STREAM_END_SCOPE, INVOCATION_END_SCOPE})
"""Scopes of the run sentinels: never dropped, never filtered out."""

EventType = Literal["node", "diagnostic", "llm", "updates", "values"]
EVENT_TYPES: tuple[EventType, ...] = get_args(EventType)
"""Every value of ``event.type``."""

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def quantize_timestamp(ts: float) -> float:
    """``ts`` (POSIX seconds) rounded to the nearest whole microsecond.

    The result is what RFC 3339 text with microseconds holds exactly: it survives
    `format_timestamp` then `parse_timestamp` unchanged, and rounding it again is
    a no-op, for every instant a ``datetime`` can show. Every event timestamp
    goes through this (or, for the default clock, `now_timestamp`).
    """
    us = ts * 1e6
    if -2251799813685248.0 < us < 2251799813685248.0:  # 2**51 µs: 1898 to 2041
        # The product is then within a quarter microsecond of the truth, so
        # rounding it is exact, and a rounded value rounds to itself.
        return (us + 0.5) // 1.0 / 1e6
    # Later (and before 1898) whole seconds and the fraction are rounded apart,
    # as datetime.fromtimestamp does: the fraction keeps its precision and the
    # microsecond count is an exact integer, so the result is the float nearest
    # to it, which is what parsing the text gives.
    seconds = ts // 1.0
    return (seconds * 1e6 + ((ts - seconds) * 1e6 + 0.5) // 1.0) / 1e6


def now_timestamp() -> float:
    """The current POSIX time in whole microseconds (the default event clock).

    The same value `quantize_timestamp` would give, computed from exact integer
    nanoseconds: cheaper than rounding ``time.time()``.
    """
    return _time_ns() // 1000 / 1e6


def format_timestamp(ts: float) -> str:
    """RFC 3339 text (six fractional digits, ``+00:00``) for POSIX seconds ``ts``."""
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).isoformat(timespec="microseconds")


def parse_timestamp(text: str) -> float:
    """POSIX seconds from RFC 3339 text (a trailing ``Z`` is accepted).

    Text without an offset is read as UTC. Digits beyond microseconds are cut.
    """
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = _dt.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_dt.UTC)
    return parsed.timestamp()


class _EventMixin:
    """Behaviour shared by every event variant."""

    __slots__ = ()

    type: ClassVar[EventType]
    timestamp: float

    @property
    def datetime(self) -> _dt.datetime:
        """`timestamp` as an aware UTC ``datetime``."""
        return _dt.datetime.fromtimestamp(self.timestamp, _dt.UTC)

    @property
    def scope_label(self) -> str:
        """The scope shown to consumers (node/diagnostic scope, LLM kind)."""
        raise NotImplementedError

    @property
    def message(self) -> str:
        """The text of the event (an LLM event's chunk)."""
        raise NotImplementedError

    @property
    def is_stream_end(self) -> bool:
        """True only for the stream-end `DiagnosticEvent` that closes a run."""
        return False

    @property
    def is_sentinel(self) -> bool:
        """True for the run sentinels: the stream-end and invocation-end diagnostics.

        The bus never drops them and subscription filters always let them through.
        """
        return False

    def json_metadata(self) -> dict[str, Any]:
        """The ``metadata`` object of the normalized JSON form."""
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        """The normalized JSON-ready dict with the five keys."""
        return {
            "type": self.type,
            "scope": self.scope_label,
            "message": self.message,
            "timestamp": format_timestamp(self.timestamp),
            "metadata": self.json_metadata(),
        }

    def to_json_str(self, pretty: bool = False) -> str:
        """`to_json` encoded as JSON text (two-space indented when ``pretty``)."""
        return dumps(self.to_json(), pretty=pretty)


@attrs.frozen(kw_only=True, eq=True)
class NodeEvent(_EventMixin):
    """An event a node emitted with ``ctx.emit``.

    Attributes:
        scope: A label chosen by the node (``"progress"``, ``"tool_call"`` …).
        message: Free text.
        node_id: The emitting node (``None`` for events built by hand).
        step: The superstep.
        metadata: JSON-like extra data.
        timestamp: POSIX seconds when emitted.
        session_id: The run's session id, when emitted by a run.
    """

    type: ClassVar[EventType] = "node"

    scope: str
    message: str = ""
    node_id: str | None = None
    step: int | None = None
    metadata: Mapping[str, Any] = _EMPTY
    timestamp: float = attrs.field(factory=_time, converter=quantize_timestamp)
    session_id: str | None = None

    @property
    def scope_label(self) -> str:
        return self.scope

    def json_metadata(self) -> dict[str, Any]:
        out = dict(self.metadata)
        if self.session_id is not None:
            out["session_id"] = self.session_id
        if self.node_id is not None:
            out["node_id"] = self.node_id
        if self.step is not None:
            out["step"] = self.step
        return out

    def __str__(self) -> str:
        if self.node_id is not None and self.step is not None:
            return f"[{self.node_id}@{self.step}] {self.message}"
        if self.node_id is not None:
            return f"[{self.node_id}] {self.message}"
        if self.step is not None:
            return f"[step {self.step}] {self.message}"
        return self.message


@attrs.frozen(kw_only=True, eq=True)
class DiagnosticEvent(_EventMixin):
    """A framework or node diagnostic (the stream-end sentinel is one of these).

    Attributes:
        scope: The diagnostic's scope, e.g. `STREAM_END_SCOPE`.
        message: Free text.
        timestamp: POSIX seconds when emitted.
        metadata: Structured facts (JSON-like). The stream-end sentinel carries
            ``status``, ``session_id``, ``step`` and ``error`` (``None`` unless
            the run failed); read these instead of parsing ``message``.
    """

    type: ClassVar[EventType] = "diagnostic"

    scope: str
    message: str = ""
    timestamp: float = attrs.field(factory=_time, converter=quantize_timestamp)
    metadata: Mapping[str, Any] = _EMPTY

    @property
    def scope_label(self) -> str:
        return self.scope

    @property
    def is_stream_end(self) -> bool:
        return self.scope == STREAM_END_SCOPE

    @property
    def is_sentinel(self) -> bool:
        return self.scope in SENTINEL_SCOPES

    def json_metadata(self) -> dict[str, Any]:
        return dict(self.metadata)

    def __str__(self) -> str:
        return self.message


LLM_CHUNK = "llm.chunk"
LLM_FINAL = "llm.final"
LLM_ERROR = "llm.error"


@attrs.frozen(kw_only=True, eq=True)
class LLMEvent(_EventMixin):
    """A piece of streamed language-model output.

    Its scope label is ``"llm.chunk"``, ``"llm.final"`` or, for errors (metadata
    ``severity == "error"``), ``"llm.error"`` — never the stream-end scope.

    Attributes:
        chunk: The text of this piece.
        is_final: True for the last piece of a stream (and for errors).
        session_id: The run's session id.
        node_id: The emitting node.
        stream_id: Which LLM stream this piece belongs to.
        metadata: JSON-like extra data (model name, token counts …).
        timestamp: POSIX seconds when emitted.
    """

    type: ClassVar[EventType] = "llm"

    chunk: str
    is_final: bool = False
    session_id: str | None = None
    node_id: str | None = None
    stream_id: str | None = None
    metadata: Mapping[str, Any] = _EMPTY
    timestamp: float = attrs.field(factory=_time, converter=quantize_timestamp)

    @property
    def is_error(self) -> bool:
        """Whether this piece reports a failed stream."""
        return self.metadata.get("severity") == "error"

    @property
    def scope_label(self) -> str:
        if self.is_error:
            return LLM_ERROR
        return LLM_FINAL if self.is_final else LLM_CHUNK

    @property
    def message(self) -> str:
        return self.chunk

    def json_metadata(self) -> dict[str, Any]:
        out = dict(self.metadata)
        if self.session_id is not None:
            out["session_id"] = self.session_id
        if self.node_id is not None:
            out["node_id"] = self.node_id
        if self.stream_id is not None:
            out["stream_id"] = self.stream_id
        out["is_final"] = self.is_final
        return out

    def __str__(self) -> str:
        label = self.stream_id or self.node_id
        return f"[LLM {label}] {self.chunk}" if label else self.chunk


Event: TypeAlias = NodeEvent | DiagnosticEvent | LLMEvent
"""Any event."""


def end_message(
    session_id: str, status: str, step: int, error: str | None = None
) -> str:
    """The stream-end sentinel's message text (SPEC §4)."""
    text = f"session={session_id} status={status} step={step}"
    if error is not None:
        text += f" error={error}"
    return text


def stream_end_event(
    session_id: str,
    status: str,
    step: int,
    error: str | None = None,
    scope: str = STREAM_END_SCOPE,
    timestamp: float | None = None,
) -> DiagnosticEvent:
    """The sentinel that ends a run's stream: its text and its structured facts.

    The one place a sentinel is built. ``metadata`` holds ``status``,
    ``session_id``, ``step`` and ``error`` (``None`` unless the run failed).
    """
    return DiagnosticEvent(
        scope=scope,
        message=end_message(session_id, status, step, error),
        metadata=MappingProxyType(
            {"status": status, "session_id": session_id, "step": step, "error": error}
        ),
        timestamp=now_timestamp() if timestamp is None else timestamp,
    )


_NODE_KEYS = ("session_id", "node_id", "step")
_LLM_KEYS = ("session_id", "node_id", "stream_id", "is_final")


def event_from_json(obj: Mapping[str, Any] | str | bytes) -> Event:
    """Rebuild an event from its normalized JSON form (a dict or JSON text).

    Raises:
        EventDecodeError: unknown ``type`` or missing/ill-typed keys.
    """
    from .._codec import loads

    data = loads(obj) if isinstance(obj, str | bytes) else obj
    if not isinstance(data, Mapping):
        raise EventDecodeError(f"an event must be a JSON object, got {data!r}")
    try:
        kind = data["type"]
        scope = data["scope"]
        message = data.get("message", "")
        stamp = data.get("timestamp")
        metadata = dict(data.get("metadata") or {})
    except (KeyError, TypeError) as exc:
        raise EventDecodeError(f"not a normalized event: {data!r} ({exc})") from exc
    if not isinstance(scope, str) or not isinstance(message, str):
        raise EventDecodeError(f"scope and message must be strings in {data!r}")
    try:
        timestamp = parse_timestamp(stamp) if isinstance(stamp, str) else None
    except ValueError as exc:
        raise EventDecodeError(f"bad timestamp {stamp!r} in {data!r}: {exc}") from exc
    if timestamp is None:
        timestamp = now_timestamp()
    if kind == "node":
        fields = {k: metadata.pop(k) for k in _NODE_KEYS if k in metadata}
        return NodeEvent(
            scope=scope,
            message=message,
            metadata=MappingProxyType(metadata) if metadata else _EMPTY,
            timestamp=timestamp,
            **fields,
        )
    if kind == "diagnostic":
        return DiagnosticEvent(
            scope=scope,
            message=message,
            timestamp=timestamp,
            metadata=MappingProxyType(metadata) if metadata else _EMPTY,
        )
    if kind == "llm":
        fields = {k: metadata.pop(k) for k in _LLM_KEYS if k in metadata}
        return LLMEvent(
            chunk=message,
            metadata=MappingProxyType(metadata) if metadata else _EMPTY,
            timestamp=timestamp,
            **fields,
        )
    if kind == "updates" or kind == "values":
        from .steps import step_item_from_json

        return step_item_from_json(kind, scope, message, timestamp, metadata)
    raise EventDecodeError(
        f"unknown event type {kind!r}; expected one of {', '.join(EVENT_TYPES)}"
    )


# The fast constructors. Emitting is the hot path of a run: these build a frozen
# event through its slot descriptors, skipping the attrs ``__init__`` (about three
# times faster), for callers that pass values of the right types (the
# `NodeContext` methods). The setters are module globals rather than default
# arguments: a keyword-only default costs a dict lookup on every call.


def _setters(cls: type[Any], names: str) -> tuple[Any, ...]:
    return tuple(cls.__dict__[name].__set__ for name in names.split())


NODE_EVENT_SETTERS = _setters(
    NodeEvent, "scope message node_id step metadata timestamp session_id"
)
"""`NodeEvent`'s slot setters in that order, for code that builds events inline.

Whoever sets ``timestamp`` through them rounds it as `quantize_timestamp` does.
"""
(
    _node_scope,
    _node_message,
    _node_node_id,
    _node_step,
    _node_metadata,
    _node_timestamp,
    _node_session_id,
) = NODE_EVENT_SETTERS
LLM_EVENT_SETTERS = _setters(
    LLMEvent, "chunk is_final session_id node_id stream_id metadata timestamp"
)
"""`LLMEvent`'s slot setters in that order (see `NODE_EVENT_SETTERS`)."""
(
    _llm_chunk,
    _llm_is_final,
    _llm_session_id,
    _llm_node_id,
    _llm_stream_id,
    _llm_metadata,
    _llm_timestamp,
) = LLM_EVENT_SETTERS
_new = object.__new__


def make_node_event(
    scope: str,
    message: str,
    node_id: str | None,
    step: int | None,
    metadata: Mapping[str, Any],
    timestamp: float,
    session_id: str | None,
) -> NodeEvent:
    """A `NodeEvent`, built fast; ``timestamp`` is rounded like `quantize_timestamp`."""
    event: NodeEvent = _new(NodeEvent)
    _node_scope(event, scope)
    _node_message(event, message)
    _node_node_id(event, node_id)
    _node_step(event, step)
    _node_metadata(event, metadata)
    _node_timestamp(event, quantize_timestamp(timestamp))
    _node_session_id(event, session_id)
    return event


def make_llm_event(
    chunk: str,
    is_final: bool,
    session_id: str | None,
    node_id: str | None,
    stream_id: str | None,
    metadata: Mapping[str, Any],
    timestamp: float,
) -> LLMEvent:
    """An `LLMEvent`, built fast; ``timestamp`` is rounded like `quantize_timestamp`."""
    event: LLMEvent = _new(LLMEvent)
    _llm_chunk(event, chunk)
    _llm_is_final(event, is_final)
    _llm_session_id(event, session_id)
    _llm_node_id(event, node_id)
    _llm_stream_id(event, stream_id)
    _llm_metadata(event, metadata)
    _llm_timestamp(event, quantize_timestamp(timestamp))
    return event
