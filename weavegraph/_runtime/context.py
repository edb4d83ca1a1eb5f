"""`NodeContext`: what a node knows about its run, and how it emits events."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import MappingProxyType
from typing import Any, final

from ..events.bus import EventBus
from ..events.types import (
    DiagnosticEvent,
    NodeEvent,
    make_llm_event,
    make_node_event,
)

_EMPTY: MappingProxyType[str, Any] = MappingProxyType({})


@final
class NodeContext:
    """Handed to every node call, next to the snapshot.

    Attributes:
        node_id: The node's name.
        step: The current superstep (from 1).
        session_id: The run's session id.
        attempt: 1 for the first attempt, then 2, 3 … when the node is retried.

    The ``emit*`` methods never wait and never fail because nobody listens; they
    raise `EventBusClosed` only when used after the run ended.
    """

    __slots__ = ("_bus", "_now", "attempt", "node_id", "session_id", "step")

    def __init__(
        self,
        node_id: str,
        step: int,
        session_id: str,
        bus: EventBus,
        clock: Callable[[], float] | None = None,
        attempt: int = 1,
    ) -> None:
        self.node_id = node_id
        self.step = step
        self.session_id = session_id
        self.attempt = attempt
        self._bus = bus
        self._now = clock if clock is not None else time.time

    def now(self) -> float:
        """POSIX seconds from the run's clock (``RuntimeConfig.clock``)."""
        return self._now()

    def _node_event(
        self, scope: str, message: str, metadata: dict[str, Any]
    ) -> NodeEvent:
        return make_node_event(
            scope,
            message,
            self.node_id,
            self.step,
            metadata or _EMPTY,
            self._now(),
            self.session_id,
        )

    def emit(self, scope: str, message: str, **metadata: Any) -> None:
        """Emit a `NodeEvent` carrying this node's id and step. Never waits.

        Args:
            scope: A label such as ``"progress"``.
            message: Free text.
            **metadata: JSON-like values attached to the event.
        """
        # The hot path of a chatty node: built inline, no helper call.
        self._bus.emit(
            make_node_event(
                scope,
                message,
                self.node_id,
                self.step,
                metadata or _EMPTY,
                self._now(),
                self.session_id,
            )
        )

    async def emit_async(self, scope: str, message: str, **metadata: Any) -> None:
        """Like `emit`, but wait until every lossless (``"block"``) consumer has room.

        A checkpoint; use it in nodes that produce events faster than consumers
        read them and must not lose any.
        """
        await self._bus.emit_async(self._node_event(scope, message, metadata))

    def emit_diagnostic(self, scope: str, message: str) -> None:
        """Emit a `DiagnosticEvent`. Never waits."""
        self._bus.emit(
            DiagnosticEvent(scope=scope, message=message, timestamp=self._now())
        )

    def _llm(
        self, stream_id: str | None, chunk: str, final: bool, metadata: dict[str, Any]
    ) -> None:
        self._bus.emit(
            make_llm_event(
                chunk,
                final,
                self.session_id,
                self.node_id,
                stream_id,
                metadata or _EMPTY,
                self._now(),
            )
        )

    def emit_llm_chunk(
        self, stream_id: str | None, chunk: str, **metadata: Any
    ) -> None:
        """Emit one piece of streamed model output (`LLMEvent`, not final)."""
        self._llm(stream_id, chunk, False, metadata)

    def emit_llm_final(
        self, stream_id: str | None, text: str = "", **metadata: Any
    ) -> None:
        """Emit the last piece of a model stream (``is_final=True``)."""
        self._llm(stream_id, text, True, metadata)

    def emit_llm_error(self, stream_id: str | None, message: str) -> None:
        """Report a failed model stream (final, metadata ``severity="error"``)."""
        self._llm(stream_id, message, True, {"severity": "error"})

    def __repr__(self) -> str:
        return (
            f"NodeContext(node_id={self.node_id!r}, step={self.step},"
            f" session_id={self.session_id!r}, attempt={self.attempt})"
        )
