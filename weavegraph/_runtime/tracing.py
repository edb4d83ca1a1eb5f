"""OpenTelemetry spans for runs, supersteps and node attempts.

The engine and the runner talk to one `Tracing` object, made once per engine by
`Tracing.create`:

* tracing off, or the ``otel`` extra (``opentelemetry-api``) not installed: a
  no-op whose every call returns a shared, do-nothing span handle. This module
  never imports opentelemetry then, and a call allocates nothing.
* on: spans go through the *global* tracer provider the application set
  (``opentelemetry.trace.set_tracer_provider``), looked up when a run starts,
  so a provider set after the app was compiled is used too. A run that starts
  with none set opens no spans at all: the API's no-op spans would record
  nothing and carry their parent's context, so the current span stays the
  same either way, and this costs two context-variable reads a node.
  ``tracer_provider=`` names another provider instead (tests, or an
  application that keeps its provider local).

Spans and their attributes (the names are the constants below):

========================  ==================================================
``weavegraph.run``        ``weavegraph.session_id``, ``weavegraph.graph_hash``,
                          ``weavegraph.status`` (completed, error, cancelled,
                          interrupted)
``weavegraph.step``       ``weavegraph.session_id``, ``weavegraph.step``
``weavegraph.node``       ``weavegraph.session_id``, ``weavegraph.step``,
                          ``weavegraph.node``, ``weavegraph.attempt``,
                          ``weavegraph.task`` (a ``Send`` task's index), and
                          ``weavegraph.timeout`` (seconds) when it timed out
========================  ==================================================

Every span ends with a ``weavegraph.status``. A failed attempt that will be
retried has a ``weavegraph.retry`` event (``weavegraph.attempt``,
``weavegraph.error``, ``weavegraph.retry.delay``); an error is recorded as the
span's exception with the ERROR status code. Cancellation (``trio.Cancelled``,
also inside exception groups) is never an error: the span ends cleanly with
``weavegraph.status = "cancelled"`` and an unset status code. An interrupt is
``"interrupted"``, also without an error.

Parents: a run's parent is the caller's current span (so a subgraph run started
inside a node is a child of that node's span); a step's parent is the current
span (its run's); a node's parent is the step it runs in. The step is taken from
this module's own context variable, not from the current span, because the
engine may start a worker task while another node's span is current: trio copies
the context variables into a task when it is spawned, so that worker would
otherwise see a sibling's span as its current span. A span a node's own code
opens (an HTTP client's, say) is a child of the node's span. Tested in
``tests/runtime/test_tracing.py``.

Each handle is a context manager to enter and exit in one task, around the work
it measures; entering twice is not supported.
"""

from __future__ import annotations

import contextvars
import importlib.metadata
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

import trio

from .._core.errors import ConfigError, NodeTimeoutError, describe_exception
from .activation import InterruptSignal

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer, TracerProvider

RUN_SPAN: Final = "weavegraph.run"
STEP_SPAN: Final = "weavegraph.step"
NODE_SPAN: Final = "weavegraph.node"
RETRY_EVENT: Final = "weavegraph.retry"

SESSION_ID: Final = "weavegraph.session_id"
GRAPH_HASH: Final = "weavegraph.graph_hash"
STEP: Final = "weavegraph.step"
NODE: Final = "weavegraph.node"
ATTEMPT: Final = "weavegraph.attempt"
TASK: Final = "weavegraph.task"
STATUS: Final = "weavegraph.status"
TIMEOUT: Final = "weavegraph.timeout"
ERROR: Final = "weavegraph.error"
RETRY_DELAY: Final = "weavegraph.retry.delay"

STATUSES: Final = frozenset({"completed", "error", "cancelled", "interrupted"})
"""The values of ``weavegraph.status`` (those of the run's end sentinel)."""

_step_parent: contextvars.ContextVar[Context | None] = contextvars.ContextVar(
    "weavegraph.tracing.step", default=None
)
"""The OTel context of the step span the current task runs nodes for."""

_untraced: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "weavegraph.tracing.untraced", default=False
)
"""Set inside a run that started with no tracer provider: its steps and nodes
skip the provider check."""


# ------------------------------------------------------------------ handles
# The base classes are the no-op handles; the live ones below subclass them.


class RunSpan:
    """The span of one run, a context manager; this base form does nothing."""

    __slots__ = ()

    @property
    def recording(self) -> bool:
        """Whether spans are actually being recorded."""
        return False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def set_status(self, status: str, error: str | None = None) -> None:
        """Set the run's final ``weavegraph.status``, as its sentinel says it.

        Call it where the sentinel is sent; it wins over what the exit would
        infer. ``"error"`` also sets the ERROR status code with ``error`` as
        its description, and the exception leaving the span, if any, is
        recorded on it.

        Raises:
            ConfigError: ``status`` is not one of `STATUSES`.
        """
        if status not in STATUSES:
            raise ConfigError(f"unknown run status {status!r}")


class StepSpan:
    """The span of one superstep, a context manager; this form does nothing."""

    __slots__ = ()

    @property
    def recording(self) -> bool:
        """Whether spans are actually being recorded."""
        return False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


class NodeSpan:
    """The span of one node attempt, a context manager; this form does nothing.

    An exception leaving the block is recorded (a `NodeTimeoutError` also marks
    the timeout), except a cancellation or an interrupt.
    """

    __slots__ = ()

    @property
    def recording(self) -> bool:
        """Whether spans are actually being recorded."""
        return False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def retry(self, error: BaseException, delay: float) -> None:
        """This attempt failed with ``error``; the next starts after ``delay`` s.

        Records ``error`` (ERROR status) and a ``weavegraph.retry`` event.
        Call it inside the block, before it ends.
        """

    def record_error(self, error: BaseException) -> None:
        """Record ``error`` on this attempt's span with the ERROR status code.

        Not needed for an exception that leaves the block (recorded on exit).
        """

    def mark_timeout(self, seconds: float, error: BaseException | None = None) -> None:
        """Mark this attempt as timed out after ``seconds`` (and record ``error``)."""


_NULL_RUN: Final = RunSpan()
_NULL_STEP: Final = StepSpan()
_NULL_NODE: Final = NodeSpan()


# ------------------------------------------------------------------ tracing


class Tracing:
    """Opens the spans of runs, steps and node attempts; this form does nothing.

    Make one with `create`. Each method returns a handle to use as a context
    manager around the work it measures::

        with tracing.run(session_id, graph_hash) as run:
            ...
            run.set_status("completed")
    """

    __slots__ = ()

    @property
    def enabled(self) -> bool:
        """Whether this object opens real OpenTelemetry spans."""
        return False

    @classmethod
    def create(
        cls,
        enabled: bool,
        *,
        tracer_provider: TracerProvider | None = None,
        pauses: tuple[type[BaseException], ...] = (),
    ) -> Tracing:
        """Tracing through OpenTelemetry, or the no-op when off or not installed.

        Args:
            enabled: ``False`` gives the no-op without importing anything.
            tracer_provider: The provider to use instead of the global one.
            pauses: Exception types that pause a run rather than fail it, beside
                a node's interrupt; a span they leave ends ``"interrupted"``.
        """
        if not enabled:
            return _DISABLED
        if tracer_provider is None:
            # One per process and kind of pause: engines are made per run, and
            # reading the package version costs milliseconds.
            shared = _GLOBAL.get(pauses)
            if shared is not None:
                return shared
        try:
            from opentelemetry import context, trace
        except ImportError:
            return _DISABLED
        try:
            version: str | None = importlib.metadata.version("weavegraph")
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover
            version = None
        tracer = trace.get_tracer("weavegraph", version, tracer_provider)
        api = _Api(tracer, trace, context, (InterruptSignal, *pauses))
        made = _LiveTracing(api, provider_given=tracer_provider is not None)
        if tracer_provider is None:
            _GLOBAL[pauses] = made
        return made

    def run(self, session_id: str, graph_hash: str) -> RunSpan:
        """The span of a run of ``session_id`` (child of the current span)."""
        return _NULL_RUN

    def step(self, session_id: str, step: int) -> StepSpan:
        """The span of superstep ``step`` (child of the current span)."""
        return _NULL_STEP

    def node(
        self,
        session_id: str,
        step: int,
        node: str,
        attempt: int,
        task: int | None = None,
    ) -> NodeSpan:
        """The span of one attempt of ``node`` (child of the step it runs in).

        Args:
            session_id: The run's session.
            step: The superstep.
            node: The node's name.
            attempt: 1 for the first attempt, then 2, 3 … per retry.
            task: The index of the ``Send`` task this attempt runs, if any.
        """
        return _NULL_NODE


_DISABLED: Final = Tracing()
NO_TRACING: Final = _DISABLED
"""The no-op `Tracing` (what `Tracing.create(False)` returns)."""
_GLOBAL: dict[tuple[type[BaseException], ...], Tracing] = {}
"""The live `Tracing` objects that use the global provider, by their pauses."""


# --------------------------------------------------------------- live spans


class _Api:
    """The loaded OpenTelemetry API and what every live span needs of it."""

    __slots__ = (
        "context",
        "error_code",
        "pauses",
        "proxy_provider",
        "status",
        "trace",
        "tracer",
    )

    def __init__(
        self,
        tracer: Tracer,
        trace: Any,
        context: Any,
        pauses: tuple[type[BaseException], ...],
    ) -> None:
        self.tracer = tracer
        self.trace = trace
        self.context = context
        self.status = trace.Status
        self.error_code = trace.StatusCode.ERROR
        self.proxy_provider = trace.ProxyTracerProvider
        self.pauses = pauses

    def outcome(self, exc: BaseException) -> str:
        """The status that ``exc`` leaving a span means."""
        if isinstance(exc, BaseExceptionGroup):
            found = {self.outcome(inner) for inner in exc.exceptions}
            for status in ("error", "interrupted", "cancelled"):
                if status in found:
                    return status
        if isinstance(exc, trio.Cancelled):
            return "cancelled"
        if isinstance(exc, self.pauses):
            return "interrupted"
        if isinstance(exc, Exception):
            return "error"
        return "cancelled"  # KeyboardInterrupt, SystemExit …: the run was stopped


class _Live:
    """What the live handles share: open on enter, classify and end on exit."""

    __slots__ = ("_api", "_attributes", "_recorded", "_span", "_status", "_token")

    name: str = ""

    def __init__(self, api: _Api, attributes: dict[str, Any]) -> None:
        self._api = api
        self._attributes = attributes
        self._span: Span | None = None
        self._token: object = None
        self._status: str | None = None
        self._recorded: BaseException | None = None

    @property
    def recording(self) -> bool:
        return self._span is not None and self._span.is_recording()

    def _parent(self) -> Context | None:
        return None  # the current context

    def _start(self) -> Span:
        api = self._api
        span = api.tracer.start_span(
            self.name,
            context=self._parent(),
            attributes=self._attributes,
            record_exception=False,
            set_status_on_exception=False,
        )
        self._span = span
        self._token = api.context.attach(api.trace.set_span_in_context(span))
        return span

    def _error(self, span: Span, error: BaseException, *, escaped: bool) -> None:
        if self._recorded is not error:
            self._recorded = error
            span.record_exception(error, escaped=escaped)
        if self._status != "error":
            # The first error describes the span (a run's own text wins).
            api = self._api
            span.set_status(api.status(api.error_code, describe_exception(error)))
            self._status = "error"

    def _end(self, exc: BaseException | None) -> None:
        span = self._span
        assert span is not None, "a span handle exited without being entered"
        try:
            if exc is not None:
                outcome = self._api.outcome(exc)
                if outcome == "error" and self._status in (None, "error"):
                    self._error(span, exc, escaped=True)
                    if isinstance(exc, NodeTimeoutError):
                        span.set_attribute(TIMEOUT, exc.timeout)
                elif self._status is None:
                    self._status = outcome
            span.set_attribute(STATUS, self._status or "completed")
        finally:
            self._api.context.detach(self._token)
            span.end()


class _IdleRun(RunSpan):
    """A run while no tracer provider is set: no span, and none for its parts."""

    __slots__ = ("_token",)

    def __enter__(self) -> Self:
        self._token = _untraced.set(True)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _untraced.reset(self._token)


class _LiveRun(_Live, RunSpan):
    __slots__ = ("_step_token", "_untraced_token")
    name = RUN_SPAN

    def __enter__(self) -> Self:
        self._start()
        # A run opened inside a node (a subgraph) starts with no step of its own.
        self._step_token = _step_parent.set(None)
        self._untraced_token = _untraced.set(False)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._end(exc)
        finally:
            _untraced.reset(self._untraced_token)
            _step_parent.reset(self._step_token)

    def set_status(self, status: str, error: str | None = None) -> None:
        if status not in STATUSES:
            raise ConfigError(f"unknown run status {status!r}")
        self._status = status
        span = self._span
        if status == "error" and span is not None:
            span.set_status(self._api.status(self._api.error_code, error))


class _LiveStep(_Live, StepSpan):
    __slots__ = ("_step_token",)
    name = STEP_SPAN

    def __enter__(self) -> Self:
        self._start()
        self._step_token = _step_parent.set(self._api.context.get_current())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._end(exc)
        finally:
            _step_parent.reset(self._step_token)


class _LiveNode(_Live, NodeSpan):
    __slots__ = ()
    name = NODE_SPAN

    def _parent(self) -> Context | None:
        return _step_parent.get()

    def __enter__(self) -> Self:
        self._start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._end(exc)

    def retry(self, error: BaseException, delay: float) -> None:
        span = self._span
        if span is None:
            return
        self.record_error(error)
        span.add_event(
            RETRY_EVENT,
            {
                ATTEMPT: self._attributes[ATTEMPT],
                ERROR: describe_exception(error),
                RETRY_DELAY: float(delay),
            },
        )

    def record_error(self, error: BaseException) -> None:
        span = self._span
        if span is None:
            return
        self._error(span, error, escaped=False)
        if isinstance(error, NodeTimeoutError):
            span.set_attribute(TIMEOUT, error.timeout)

    def mark_timeout(self, seconds: float, error: BaseException | None = None) -> None:
        span = self._span
        if span is None:
            return
        span.set_attribute(TIMEOUT, float(seconds))
        if error is not None:
            self._error(span, error, escaped=False)


class _LiveTracing(Tracing):
    __slots__ = ("_api", "_provider_set")

    def __init__(self, api: _Api, provider_given: bool) -> None:
        self._api = api
        self._provider_set = provider_given

    @property
    def enabled(self) -> bool:
        return True

    def _idle(self) -> bool:
        """Whether no tracer provider is set yet (the API's no-op).

        Its spans would record nothing and carry their parent's context, so
        opening none is the same, minus their cost. A provider, once set,
        stays: from then on this costs one attribute read.
        """
        if self._provider_set:
            return False
        api = self._api
        if isinstance(api.trace.get_tracer_provider(), api.proxy_provider):
            return True
        self._provider_set = True
        return False

    def run(self, session_id: str, graph_hash: str) -> RunSpan:
        if self._idle():
            return _IdleRun()
        return _LiveRun(self._api, {SESSION_ID: session_id, GRAPH_HASH: graph_hash})

    def step(self, session_id: str, step: int) -> StepSpan:
        if _untraced.get() or self._idle():
            return _NULL_STEP
        return _LiveStep(self._api, {SESSION_ID: session_id, STEP: step})

    def node(
        self,
        session_id: str,
        step: int,
        node: str,
        attempt: int,
        task: int | None = None,
    ) -> NodeSpan:
        # Inside a live step the provider is known; otherwise check.
        if _step_parent.get() is None and (_untraced.get() or self._idle()):
            return _NULL_NODE
        attributes: dict[str, Any] = {
            SESSION_ID: session_id,
            STEP: step,
            NODE: node,
            ATTEMPT: attempt,
        }
        if task is not None:
            attributes[TASK] = task
        return _LiveNode(self._api, attributes)
