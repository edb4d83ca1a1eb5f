"""`RuntimeConfig`: how an ``App`` runs (session id, bus, limits, clock)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import attrs

from .._core.errors import ConfigError
from .._core.session import check_session_id
from ..checkpoint.record import Checkpointer
from ..events.bus import EventBusConfig
from ..events.steps import StreamMode, check_modes


def _check_limit(_: object, __: object, value: Any) -> None:
    if value is not None and (
        not isinstance(value, int) or isinstance(value, bool) or value < 1
    ):
        raise ConfigError(
            f"concurrency_limit must be None (no limit) or an int >= 1, got {value!r}"
        )


def _check_steps(_: object, __: object, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"max_steps must be an int >= 1, got {value!r}")


def _check_session(_: object, __: object, value: Any) -> None:
    if value is not None:
        check_session_id(value)


def _check_bus(_: object, __: object, value: Any) -> None:
    if not isinstance(value, EventBusConfig):
        raise ConfigError(f"event_bus must be an EventBusConfig, got {value!r}")


def _check_checkpointer(_: object, __: object, value: Any) -> None:
    if value is not None and not isinstance(value, Checkpointer):
        raise ConfigError(
            f"checkpointer must be a Checkpointer (InMemoryCheckpointer,"
            f" SQLiteCheckpointer, PostgresCheckpointer …) or None, got {value!r}"
        )


def _check_clock(_: object, __: object, value: Any) -> None:
    if value is not None and not callable(value):
        raise ConfigError(
            f"clock must be a function returning POSIX seconds, got {value!r}"
        )


def _to_breakpoints(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    try:
        names = tuple(value)
    except TypeError:
        raise ConfigError(f"breakpoints are node names or '*', got {value!r}") from None
    for name in names:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"breakpoints are node names or '*', got {name!r}")
    return names


def _check_flag(_: object, attribute: attrs.Attribute[bool], value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{attribute.name} must be True or False, got {value!r}")


def _kind(obj: object) -> str:
    return "-" if obj is None else type(obj).__qualname__


@attrs.frozen(kw_only=True)
class RuntimeConfig:
    """How runs of an ``App`` behave.

    Attributes:
        session_id: Fixed session id; ``None`` gives every run a fresh ``run-<uuid>``.
        checkpointer: Where the ``App`` helpers save checkpoints (``None``: none).
        event_bus: How each run's event bus is built.
        concurrency_limit: At most this many nodes of a superstep run at once
            (``None``: no limit).
        max_steps: A run that has not finished after this many supersteps fails
            with `StepLimitExceeded`.
        clock: A function returning POSIX seconds, used for event timestamps and
            ``ctx.now()``; ``None`` uses ``time.time``. Set it for reproducible runs.
        interrupt_before: Breakpoints: pause before a step whose frontier holds
            one of these nodes (``"*"``: any). Resuming moves past it.
        interrupt_after: Pause after a step that ran one of these nodes.
        tracing: Produce OpenTelemetry spans when the ``otel`` extra is
            installed (through the application's tracer provider).
        lifecycle_events: Emit ``node.start``/``node.end``/``node.retry``/
            ``node.error``/``step.end`` events through the run's bus (on by
            default; built only while a stream or sink listens; see
            docs/events.md). ``False`` turns them off.
        stream_modes: What a run publishes and `App.invoke_streaming` streams
            by default: ``"events"`` (always published), ``"updates"`` (each
            step's partials by node, `StepUpdates`) and ``"values"`` (the
            state after each step, `StepValues`), any combination; sinks see
            every item published (see docs/streaming.md, "Stream modes").
    """

    session_id: str | None = attrs.field(default=None, validator=_check_session)
    checkpointer: Checkpointer | None = attrs.field(
        default=None, validator=_check_checkpointer
    )
    event_bus: EventBusConfig = attrs.field(
        factory=EventBusConfig, validator=_check_bus
    )
    concurrency_limit: int | None = attrs.field(default=None, validator=_check_limit)
    max_steps: int = attrs.field(default=100, validator=_check_steps)
    clock: Callable[[], float] | None = attrs.field(
        default=None, validator=_check_clock
    )
    interrupt_before: tuple[str, ...] = attrs.field(
        default=(), converter=_to_breakpoints
    )
    interrupt_after: tuple[str, ...] = attrs.field(
        default=(), converter=_to_breakpoints
    )
    tracing: bool = attrs.field(default=True, validator=_check_flag)
    lifecycle_events: bool = attrs.field(default=True, validator=_check_flag)
    stream_modes: tuple[StreamMode, ...] = attrs.field(
        default=("events",), converter=check_modes
    )

    @property
    def clock_mode(self) -> str:
        """``"configured"`` when a clock is set, else ``"unset"``."""
        return "unset" if self.clock is None else "configured"

    @property
    def config_hash(self) -> str:
        """A stable hex digest of the settings that shape a run's results."""
        parts = [
            "weavegraph-config/1",
            f"session_id:{self.session_id}",
            f"checkpointer:{_kind(self.checkpointer)}",
            f"concurrency_limit:{self.concurrency_limit}",
            f"max_steps:{self.max_steps}",
            f"clock:{self.clock_mode}",
            *self.event_bus.signature(),
        ]
        # Only when set, so configurations without breakpoints keep their hash.
        if self.interrupt_before:
            parts.append(f"interrupt_before:{','.join(self.interrupt_before)}")
        if self.interrupt_after:
            parts.append(f"interrupt_after:{','.join(self.interrupt_after)}")
        # Only when off: the default (on) keeps the hash sessions were stored
        # with before lifecycle events existed.
        if not self.lifecycle_events:
            parts.append("lifecycle_events:off")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]
