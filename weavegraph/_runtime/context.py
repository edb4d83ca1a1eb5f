"""`NodeContext`: what a node knows about its run, and how it emits events."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from time import time_ns as _time_ns
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, final

from .._core.errors import ReservedScopeError, UsageError
from .._core.session import task_key
from ..events.bus import EventBus
from ..events.steps import STEP_ITEM_SCOPES
from ..events.types import (
    LLM_EVENT_SETTERS,
    NODE_EVENT_SETTERS,
    RESERVED_SCOPE_PREFIX,
    DiagnosticEvent,
    LLMEvent,
    NodeEvent,
    quantize_timestamp,
)
from .lifecycle import LIFECYCLE_SCOPES

if TYPE_CHECKING:
    from .._core.session import Session
    from .activation import Activation, Persist

_EMPTY: MappingProxyType[str, Any] = MappingProxyType({})
_ERROR: MappingProxyType[str, Any] = MappingProxyType({"severity": "error"})
_new = object.__new__
(
    _set_scope,
    _set_message,
    _set_node_id,
    _set_step,
    _set_metadata,
    _set_timestamp,
    _set_session_id,
) = NODE_EVENT_SETTERS
(
    _set_chunk,
    _set_is_final,
    _set_llm_session_id,
    _set_llm_node_id,
    _set_stream_id,
    _set_llm_metadata,
    _set_llm_timestamp,
) = LLM_EVENT_SETTERS


def reserved_scope_error(scope: str) -> ReservedScopeError:
    """The error for node code that emits under a framework scope."""
    if scope in STEP_ITEM_SCOPES:
        return ReservedScopeError(
            f"scope {scope!r} is reserved for the items of the 'updates' and"
            " 'values' stream modes; pick another scope, e.g. 'progress'"
        )
    if scope in LIFECYCLE_SCOPES:
        return ReservedScopeError(
            f"scope {scope!r} is reserved for weavegraph's lifecycle events"
            f" ({', '.join(sorted(LIFECYCLE_SCOPES))}); pick another scope, e.g."
            " 'progress'"
        )
    return ReservedScopeError(
        f"scope {scope!r} is reserved: scopes starting with"
        f" {RESERVED_SCOPE_PREFIX!r} (STREAM_END_SCOPE, INVOCATION_END_SCOPE,"
        " DIAGNOSTIC_SCOPE ...) belong to weavegraph, and emitting one could end"
        " every stream of the run early; pick another scope, e.g. 'progress'"
    )


@final
class NodeContext:
    """Handed to every node call, next to the snapshot.

    Attributes:
        node_id: The node's name.
        step: The current superstep (from 1).
        session_id: The run's session id.
        attempt: 1 for the first attempt, then 2, 3 … when the node is retried.
        payload: The payload of the `Send` that scheduled this task (``None``
            for a node scheduled by edges, routers or commands).
        task_index: The index of that `Send` among the step's sends (``None``
            for an ordinarily scheduled node). Every event a sent task emits
            carries it as ``metadata["task"]``; inside a subgraph, every event
            carries ``metadata["path"]`` (the subgraph nodes, then this node).

    The ``emit*`` methods never wait and never fail because nobody listens; they
    raise `EventBusClosed` only when used after the run ended, and
    `ReservedScopeError` for a scope starting with ``__weavegraph_`` (those
    belong to the framework: its sentinels end streams).
    """

    __slots__ = (
        "_activation",
        "_bus",
        "_clock",
        "_emit",
        "_host",
        "_persist",
        "_scope_ok",
        "_session",
        "_tags",
        "attempt",
        "node_id",
        "payload",
        "session_id",
        "step",
        "task_index",
    )

    def __init__(
        self,
        node_id: str,
        step: int,
        session_id: str,
        bus: EventBus,
        clock: Callable[[], float] | None = None,
        attempt: int = 1,
        session: Session | None = None,
        persist: Persist | None = None,
        task_index: int | None = None,
        payload: Any = None,
        host: Any = None,
    ) -> None:
        # The activation (interrupt answers, task results) is made on first use:
        # most nodes never ask.
        self._activation: Activation | None = None
        self._session = session
        self._persist = persist
        self.node_id = node_id
        self.step = step
        self.session_id = session_id
        self.attempt = attempt
        self.task_index = task_index
        self.payload = payload
        # The runner's handle for subgraph nodes (their child runs).
        self._host = host
        # What every event of a sent task or a subgraph's node carries.
        tags: dict[str, Any] | None = None
        if task_index is not None:
            tags = {"task": task_index}
        path = host.path if host is not None else ()
        if path:
            tags = {**(tags or {}), "path": [*path, task_key(node_id, task_index)]}
        self._tags = tags
        self._bus = bus
        self._emit = bus.emit  # bound once: emit is the hot path
        # The last scope that passed the reserved-scope check. A chatty node
        # emits one scope (the same string object) again and again: then the
        # check is one identity test.
        self._scope_ok: str | None = None
        # None: the default clock, read as integer nanoseconds (exact, and the
        # cheapest way to whole microseconds); a configured clock is rounded.
        self._clock = clock

    async def interrupt(self, payload: Any = None) -> Any:
        """Pause the session until a human (or a program) answers ``payload``.

        The first time, the run pauses: this node's task ends, the session is
        saved with the interrupt pending (`SessionState.interrupts`), and the
        run ends with status ``interrupted``. Resuming with an answer
        (``runner.resume(sid, value)``, ``app.invoke(Resume(value), ...)``)
        runs this node again from its start; this call then returns the
        answer at once. A node may interrupt several times: the answers are
        recorded in order. ``payload`` must be a storable value.

        A checkpoint.

        Raises:
            StateError: ``payload`` is outside the storable domain.
        """
        return await self._activate("interrupt()").interrupt(payload)

    async def task(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` once per node activation and record its result.

        When this node runs again — after an interrupt, a crash or a
        cancellation — a task already recorded returns its stored result
        instead of running again, so finished work is never repeated. ``fn``
        is async, or sync and quick; its result must be a storable value. The
        n-th call with one ``name`` is the n-th task of that name. The result
        is stored before this returns (durable across a process kill).

        A checkpoint.

        Raises:
            StateError: the result is outside the storable domain.
        """
        return await self._activate("task()").task(name, fn, *args)

    def _activate(self, what: str) -> Activation:
        if self._activation is None:
            if self._session is None:
                raise UsageError(f"{what} needs a node run by weavegraph")
            from .activation import Activation

            self._activation = Activation(
                self._session, self.node_id, self.step, self._persist, self.task_index
            )
        return self._activation

    def now(self) -> float:
        """POSIX seconds from the run's clock (``RuntimeConfig.clock``).

        Rounded to whole microseconds, like every event timestamp.
        """
        clock = self._clock
        if clock is None:
            return _time_ns() // 1000 / 1e6  # what now_timestamp() does
        return quantize_timestamp(clock())

    def _check_scope(self, scope: str) -> None:
        if (
            scope.startswith(RESERVED_SCOPE_PREFIX)
            or scope in LIFECYCLE_SCOPES
            or scope in STEP_ITEM_SCOPES
        ):
            raise reserved_scope_error(scope)
        self._scope_ok = scope

    def _node_event(
        self, scope: str, message: str, metadata: dict[str, Any]
    ) -> NodeEvent:
        # What emit builds inline (the hot path), for emit_async.
        event = _new(NodeEvent)
        _set_scope(event, scope)
        _set_message(event, message)
        _set_node_id(event, self.node_id)
        _set_step(event, self.step)
        if self._tags is not None:
            metadata.update(self._tags)
        _set_metadata(event, metadata or _EMPTY)
        clock = self._clock
        _set_timestamp(
            event,
            _time_ns() // 1000 / 1e6 if clock is None else quantize_timestamp(clock()),
        )
        _set_session_id(event, self.session_id)
        return event

    def emit(self, scope: str, message: str, **metadata: Any) -> None:
        """Emit a `NodeEvent` carrying this node's id and step. Never waits.

        Args:
            scope: A label such as ``"progress"``.
            message: Free text.
            **metadata: JSON-like values attached to the event.

        Raises:
            ReservedScopeError: ``scope`` starts with ``__weavegraph_``.
            EventBusClosed: the run already ended.
        """
        if scope is not self._scope_ok:
            self._check_scope(scope)
        # The hot path of a chatty node: the event is built right here, through
        # its slots (what make_node_event does, without the call).
        event = _new(NodeEvent)
        _set_scope(event, scope)
        _set_message(event, message)
        _set_node_id(event, self.node_id)
        _set_step(event, self.step)
        if self._tags is not None:
            metadata.update(self._tags)
        _set_metadata(event, metadata or _EMPTY)
        clock = self._clock
        _set_timestamp(
            event,
            _time_ns() // 1000 / 1e6 if clock is None else quantize_timestamp(clock()),
        )
        _set_session_id(event, self.session_id)
        self._emit(event)

    async def emit_async(self, scope: str, message: str, **metadata: Any) -> None:
        """Like `emit`, then give readers that are behind the chance to catch up.

        When a subscriber's buffer is full it waits: until ``"block"``
        subscribers have room, and until readers that are ready to run had
        their turn, on every policy (see `EventBus.emit_async`). Use it in nodes
        that produce events faster than consumers read them. A checkpoint;
        cancellation while it waits leaves the event emitted.

        Raises:
            ReservedScopeError: ``scope`` starts with ``__weavegraph_``.
            EventBusClosed: the run already ended.
        """
        if scope is not self._scope_ok:
            self._check_scope(scope)
        await self._bus.emit_async(self._node_event(scope, message, metadata))

    def emit_diagnostic(self, scope: str, message: str, **metadata: Any) -> None:
        """Emit a `DiagnosticEvent` with structured ``metadata``. Never waits.

        Args:
            scope: A label such as ``"cache"``.
            message: Free text.
            **metadata: JSON-like facts (the event's ``metadata``).

        Raises:
            ReservedScopeError: ``scope`` starts with ``__weavegraph_``.
            EventBusClosed: the run already ended.
        """
        if scope is not self._scope_ok:
            self._check_scope(scope)
        if self._tags is not None:
            metadata.update(self._tags)
        self._bus.emit(
            DiagnosticEvent(
                scope=scope,
                message=message,
                timestamp=self.now(),
                metadata=MappingProxyType(metadata) if metadata else _EMPTY,
            )
        )

    def _llm(
        self,
        chunk: str,
        final: bool,
        stream_id: str | None,
        metadata: Mapping[str, Any],
    ) -> None:
        # Built through the slots, like emit's events: what make_llm_event
        # does, without the call.
        event = _new(LLMEvent)
        _set_chunk(event, chunk)
        _set_is_final(event, final)
        _set_llm_session_id(event, self.session_id)
        _set_llm_node_id(event, self.node_id)
        _set_stream_id(event, stream_id)
        if self._tags is not None:
            metadata = {**metadata, **self._tags}
        _set_llm_metadata(event, metadata)
        clock = self._clock
        _set_llm_timestamp(
            event,
            _time_ns() // 1000 / 1e6 if clock is None else quantize_timestamp(clock()),
        )
        self._emit(event)

    def emit_llm_chunk(
        self, stream_id: str | None, chunk: str, **metadata: Any
    ) -> None:
        """Emit one piece of streamed model output (`LLMEvent`, not final).

        A model stream is the sequence of `LLMEvent` with one ``stream_id``: its
        chunks in order, then one final event (`emit_llm_final`). Concatenating
        every piece, the final one included, gives the whole output.

        Args:
            stream_id: Which model stream this piece belongs to.
            chunk: The new text only (a token or a few), never the text so far.
            **metadata: JSON-like extra data (model name, token counts ...).
        """
        # A token stream is as chatty as emit: built inline too (as _llm does).
        event = _new(LLMEvent)
        _set_chunk(event, chunk)
        _set_is_final(event, False)
        _set_llm_session_id(event, self.session_id)
        _set_llm_node_id(event, self.node_id)
        _set_stream_id(event, stream_id)
        if self._tags is not None:
            metadata.update(self._tags)
        _set_llm_metadata(event, metadata or _EMPTY)
        clock = self._clock
        _set_llm_timestamp(
            event,
            _time_ns() // 1000 / 1e6 if clock is None else quantize_timestamp(clock()),
        )
        self._emit(event)

    def emit_llm_final(
        self, stream_id: str | None, text: str = "", **metadata: Any
    ) -> None:
        """Emit the last piece of a model stream (``is_final=True``).

        The final event is the stream's LAST PIECE, appended like any chunk:
        usually empty (the default), or the tail not sent yet. It is never the
        whole text: a node that streamed its output with `emit_llm_chunk` must
        not send it again here (a viewer would show it twice), and a node that
        did not stream may send the whole output here as the stream's only
        piece. Either way the concatenation of the stream's pieces in order,
        final included, is the whole output.

        Args:
            stream_id: The stream this ends.
            text: The last piece ("" when every piece was sent already).
            **metadata: JSON-like extra data (finish reason, usage ...).
        """
        self._llm(text, True, stream_id, metadata or _EMPTY)

    def emit_llm_error(self, stream_id: str | None, message: str) -> None:
        """Report a failed model stream (final, metadata ``severity="error"``)."""
        self._llm(message, True, stream_id, _ERROR)

    def __repr__(self) -> str:
        return (
            f"NodeContext(node_id={self.node_id!r}, step={self.step},"
            f" session_id={self.session_id!r}, attempt={self.attempt})"
        )
