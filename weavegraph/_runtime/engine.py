"""The superstep engine: runs a frontier's nodes in a nursery, then the barrier.

The rules (gating, barrier, next frontier) are the pure functions of ``_core``;
this module only schedules, awaits and turns failures into `ErrorEvent` s.
"""

from __future__ import annotations

import logging
import time
import types
from collections import deque
from collections.abc import (
    Awaitable,
    Callable,
    Collection,
    Coroutine,
    Generator,
    Sequence,
)
from types import MappingProxyType
from typing import Any, NoReturn, TypeVar

import attrs
import trio

from .._core.errors import (
    ErrorDetail,
    ErrorEvent,
    NodeNotFound,
    NodeOutputError,
    NodeTimeoutError,
    ReducerError,
    RouterError,
    StateError,
    StepLimitExceeded,
    WorkflowError,
    describe_exception,
)
from .._core.frontier import (
    FrontierOutcome,
    is_complete,
    next_frontier,
    partition,
    start_frontier,
)
from .._core.graph import END, START, Graph, NodeSpec
from .._core.reducers import BarrierOutcome, apply_barrier
from .._core.session import Interrupt, Session, task_key
from .._core.state import (
    FrontierCommand,
    NodePartial,
    Send,
    StateSnapshot,
    VersionedState,
)
from ..events.bus import EventBus
from ..events.steps import step_item_emitter
from ..events.types import STREAM_END_SCOPE, DiagnosticEvent, Event, stream_end_event
from . import lifecycle
from .activation import InterruptSignal, Persist
from .config import RuntimeConfig
from .context import NodeContext
from .tracing import NO_TRACING, Tracing

logger = logging.getLogger("weavegraph.runtime")

GATED_SCOPE = "frontier.gated"
"""Diagnostic: a scheduled node was skipped because nothing it reads changed."""
KEY_CONFLICT_SCOPE = "barrier.key_conflict"
"""Diagnostic: several nodes of one step set the same plain ``extra`` key."""
_YIELD_INTERVAL = 0.002  # seconds of work between forced yields in a run loop


@attrs.frozen(kw_only=True)
class StepReport:
    """What one superstep did.

    Attributes:
        step: Its number.
        ran_nodes: Nodes that ran, in frontier order.
        skipped_nodes: Frontier entries that did not run (START/END, gated out).
        updated_channels: Channels whose version bumped.
        errors: Recoverable errors recorded by the barrier.
        frontier_commands: ``(node, command)`` pairs the nodes returned.
        next_frontier: The frontier of the next superstep.
        completed: Whether the run is complete after this step.
        state: The state after the step.
    """

    step: int
    ran_nodes: tuple[str, ...]
    skipped_nodes: tuple[str, ...]
    updated_channels: tuple[str, ...]
    errors: tuple[ErrorEvent, ...]
    frontier_commands: tuple[tuple[str, FrontierCommand], ...]
    next_frontier: tuple[str, ...]
    completed: bool
    state: VersionedState


@attrs.frozen
class StepOutcome:
    """What the engine hands its caller after one superstep (internal record).

    Attributes:
        step: The superstep's number.
        ran: Nodes that ran, in frontier order.
        skipped: Frontier entries that did not run.
        barrier: The barrier's result (new state, updated channels, commands).
        frontier: The next frontier and join progress.
    """

    step: int
    ran: Sequence[str]
    skipped: Sequence[str]
    barrier: BarrierOutcome
    frontier: FrontierOutcome

    def report(self) -> StepReport:
        """The public `StepReport` of this step."""
        return StepReport(
            step=self.step,
            ran_nodes=tuple(self.ran),
            skipped_nodes=tuple(self.skipped),
            updated_channels=self.barrier.updated_channels,
            errors=self.barrier.errors,
            frontier_commands=self.barrier.frontier_commands,
            next_frontier=self.frontier.frontier,
            completed=is_complete(self.frontier.frontier, self.frontier.sends),
            state=self.barrier.state,
        )


AfterStep = Callable[[Session, StepOutcome | None], Awaitable[None]]
"""Called after every step with its outcome, and with ``None`` after a failed one."""


_TRACINGS: dict[bool, Tracing] = {}


def _tracing(enabled: bool) -> Tracing:
    """One `Tracing` per setting for the whole process (made once: it looks up
    the package version and imports the API)."""
    found = _TRACINGS.get(enabled)
    if found is None:
        found = _TRACINGS[enabled] = Tracing.create(enabled, pauses=(Paused,))
    return found


def breakpoint_match(nodes: Sequence[str], breakpoints: Collection[str]) -> str | None:
    """The first real node of ``nodes`` listed in ``breakpoints`` (``"*"``: any)."""
    every = "*" in breakpoints
    for node in nodes:
        if node != START and node != END and (every or node in breakpoints):
            return node
    return None


def _has_update(partials: list[NodePartial | None]) -> bool:
    # A plain loop: cheaper than any() over a generator on this hot path.
    for partial in partials:  # noqa: SIM110
        if partial is not None:
            return True
    return False


class Paused(Exception):
    """Internal: the run pauses (an interrupt in a node, or a breakpoint).

    Attributes:
        reason: ``"interrupt"``, ``"before_node"`` or ``"after_node"``.
        node: The node a breakpoint matched.
        interrupts: The interrupts asked for (reason ``"interrupt"``).
        outcome: The step that ran, for ``"after_node"``.
    """

    def __init__(
        self,
        reason: str,
        *,
        node: str | None = None,
        interrupts: tuple[Interrupt, ...] = (),
        outcome: StepOutcome | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.node = node
        self.interrupts = interrupts
        self.outcome = outcome


class _StepInterrupted(Exception):
    def __init__(self, interrupts: list[Interrupt]) -> None:
        super().__init__(len(interrupts))
        self.interrupts = tuple(interrupts)


class _NodeFailed(Exception):
    """Internal: node ``node`` failed with ``exc``."""

    def __init__(self, node: str, exc: Exception) -> None:
        super().__init__(node, exc)
        self.node = node
        self.exc = exc


def _check_output(node: str, result: object) -> NodePartial | None:
    if result is None or isinstance(result, NodePartial):
        return result
    hint = ""
    if isinstance(result, dict):
        hint = "; wrap the update as NodePartial(extra={...}) or NodePartial(**...)"
    raise NodeOutputError(
        f"node {node!r} returned {type(result).__name__} {result!r:.80}; a node must"
        f" return a NodePartial or None{hint}"
    )


T = TypeVar("T")


@types.coroutine
def _on_suspend(
    coro: Coroutine[Any, Any, T], callback: Callable[[], None]
) -> Generator[Any, Any, T]:
    """Await ``coro`` in the current task; call ``callback`` if it ever suspends.

    Equivalent to ``await coro`` (every message and exception is passed through
    unchanged), plus a synchronous notification the first time ``coro`` yields to
    the scheduler.
    """
    try:
        message = coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    callback()
    while True:
        try:
            sent = yield message
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            try:
                message = coro.throw(exc)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
        else:
            try:
                message = coro.send(sent)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]


class Engine:
    """Runs supersteps of one compiled graph under one configuration."""

    def __init__(self, graph: Graph, config: RuntimeConfig) -> None:
        self.graph = graph
        self.config = config
        self.persist: Persist | None = None
        """Awaited after a durable task recorded its result (stores it)."""
        self.host: Any = None
        """The runner's handle for subgraph nodes (``path``, child runs)."""
        self.lifecycle = config.lifecycle_events
        self.step_items = step_item_emitter(config.stream_modes)
        """Publishes the ``updates``/``values`` items of a step (``None``: none)."""
        self._now = config.clock if config.clock is not None else time.time
        self.traced = _tracing(config.tracing)
        """Tracing as configured; a run uses it only when its span records."""
        self.tracing = self.traced
        """The tracing of the current run (the no-op when nothing records)."""

    # ---------------------------------------------------------------- sessions

    def new_session(
        self, session_id: str, state: VersionedState, bus: EventBus
    ) -> Session:
        """A fresh session at step 0 whose frontier comes from START.

        Raises:
            WorkflowError: a router on START failed.
        """
        session = Session(session_id=session_id, state=state)
        session.frontier = self.start(session, bus)
        return session

    def start(self, session: Session, bus: EventBus) -> tuple[str, ...]:
        """The frontier that START leads to from ``session``'s state.

        Sets the session's sends too (a router on START may return `Send` items).

        Raises:
            WorkflowError: a router on START failed (recorded in the session).
        """
        try:
            outcome = start_frontier(self.graph, session.state.snapshot())
        except RouterError as exc:
            self._fail(
                session,
                ErrorEvent.runner(
                    session.session_id,
                    session.step,
                    describe_exception(exc),
                    tags=["runner", "router"],
                ),
                exc,
                bus,
            )
        session.sends = outcome.sends
        return outcome.frontier

    # ---------------------------------------------------------------- one step

    async def run_step(self, session: Session, bus: EventBus) -> StepReport:
        """Run the next superstep of ``session`` and update it in place.

        A checkpoint. On failure the error is recorded in the session's state, the
        step counter stays advanced, the frontier is kept, and `WorkflowError` is
        raised. Cancellation leaves the session as it was before the step.

        Raises:
            WorkflowError: a node, router or reducer failed, or a frontier node is
                not registered.
            StepLimitExceeded: ``max_steps`` supersteps already ran.
        """
        outcome = await self.step(session, bus)
        return self.completed_report(session) if outcome is None else outcome.report()

    async def step(self, session: Session, bus: EventBus) -> StepOutcome | None:
        """`run_step`, returning the internal `StepOutcome` (``None``: complete)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        outcome = await self._step(session, bus)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return outcome

    def completed_report(self, session: Session) -> StepReport:
        """The report of a step asked of a session that is already complete."""
        return StepReport(
            step=session.step,
            ran_nodes=(),
            skipped_nodes=tuple(session.frontier),
            updated_channels=(),
            errors=(),
            frontier_commands=(),
            next_frontier=(),
            completed=True,
            state=session.state,
        )

    async def _step(self, session: Session, bus: EventBus) -> StepOutcome | None:
        """`run_step` without its checkpoints (nodes may still checkpoint).

        Returns ``None`` when the session was already complete.
        """
        frontier = session.frontier
        sends = session.sends
        if is_complete(frontier, sends):
            return None
        if session.step - session.budget_start >= self.config.max_steps:
            limit = self.config.max_steps
            event = ErrorEvent.runner(
                session.session_id,
                session.step,
                "step limit exceeded: this invocation did not finish within"
                f" max_steps={limit}"
                f" supersteps (frontier {list(frontier)}); raise"
                " RuntimeConfig.max_steps or make the loop terminate",
                tags=["runner", "step_limit"],
            )
            self._fail(session, event, None, bus, kind=StepLimitExceeded)

        step = session.step + 1
        state = session.state
        gate = state.versions.gate_key()
        to_run, skipped = partition(
            frontier, session.versions_seen, gate, self.graph.ungated
        )
        gated: tuple[str, ...] = ()
        if skipped and (len(skipped) > 1 or skipped[0] not in (START, END)):
            gated = tuple(n for n in skipped if n != START and n != END)
            self._report_gated(session, gated, step, bus)
        session.gated_out = () if to_run else gated
        if sends:
            # Each Send is a task of its own: keyed name[i], never gated.
            keys = [*to_run, *(task_key(s.node, i) for i, s in enumerate(sends))]
            ran = [*to_run, *(s.node for s in sends)]
        else:
            keys = ran = to_run
        nodes = self.graph.nodes
        for name in ran:
            if name not in nodes:
                missing = NodeNotFound(name, step)
                event = ErrorEvent.scheduler(
                    step,
                    str(missing),
                    tags=["scheduler", "node_not_found"],
                    context={"node": name},
                )
                self._fail(session, event, missing, bus, step)

        # Pending writes: nodes of this step that finished in an earlier attempt
        # (a failed or cancelled one) are not run again; their partials are kept.
        if session.pending_step != step:
            if session.pending:
                session.pending = {}
            session.pending_step = step
        kept = session.pending
        missing_nodes = [n for n in to_run if n not in kept] if kept else to_run
        missing_sends = (
            [(i, s) for i, s in enumerate(sends) if keys[len(to_run) + i] not in kept]
            if sends
            else ()
        )
        tracing = self.tracing
        span = None if tracing is NO_TRACING else tracing.step(session.session_id, step)
        if span is not None:
            span.__enter__()
        # Lifecycle events nobody could see are not built at all (checked once
        # per step).
        emit: Callable[[Event], None] | None = (
            bus.emit
            if self.lifecycle
            and bus.listening_for("diagnostic", lifecycle.ENGINE_SCOPES)
            and not bus.closed
            else None
        )
        try:
            try:
                await self._run_nodes(
                    missing_nodes,
                    state.snapshot(),
                    step,
                    session,
                    bus,
                    emit,
                    kept,
                    missing_sends,
                )
            except _StepInterrupted as paused:
                session.interrupts = paused.interrupts
                raise Paused("interrupt", interrupts=paused.interrupts) from None
            except _NodeFailed as failed:
                exc = failed.exc
                tags = (
                    ["node", "timeout"]
                    if isinstance(exc, NodeTimeoutError)
                    else ["node"]
                )
                event = ErrorEvent.node(
                    failed.node,
                    step,
                    ErrorDetail.from_exception(exc),
                    tags=tags,
                    context={},
                )
                self._fail(session, event, exc, bus, step)

            partials = [kept[key] for key in keys]
            try:
                if _has_update(partials):
                    outcome = apply_barrier(state, keys, partials, self.graph.reducers)
                else:
                    outcome = BarrierOutcome(state)
                new_state = outcome.state
                commands = outcome.frontier_commands
                if sends and commands:
                    # A sent task's command is its node's (keys are name[i]).
                    commands = tuple((k.partition("[")[0], c) for k, c in commands)
                frontier_outcome = next_frontier(
                    self.graph,
                    ran,
                    commands,
                    new_state.snapshot(),
                    session.join_progress,
                )
            except (ReducerError, RouterError, StateError) as exc:
                tag = (
                    "reducer"
                    if isinstance(exc, ReducerError)
                    else "router"
                    if isinstance(exc, RouterError)
                    else "state"
                )
                event = ErrorEvent.runner(
                    session.session_id,
                    step,
                    describe_exception(exc),
                    tags=["runner", tag],
                    context={"frontier": list(frontier)},
                )
                self._fail(session, event, exc, bus, step)

            seen = session.versions_seen
            for name in to_run:
                seen[name] = gate
            session.step = step
            session.state = new_state
            session.frontier = frontier_outcome.frontier
            session.sends = frontier_outcome.sends
            session.join_progress = frontier_outcome.join_progress
            if kept:
                session.pending = {}
            session.pending_step = None
            if session.interrupts or session.answers or session.tasks or session.error:
                session.error = None
                session.interrupts = ()
                session.answers = {}
                session.tasks = {}
            if outcome.conflicts:
                self._report_conflicts(session, step, outcome, bus)
            if emit is not None and not bus.closed:
                host = self.host
                emit(
                    lifecycle.step_end(
                        self._now(),
                        session.session_id,
                        step,
                        keys,
                        outcome.updated_channels,
                        frontier_outcome.frontier,
                        # A subgraph's step carries its path.
                        list(host.path) if host is not None and host.path else None,
                    )
                )
            step_items = self.step_items
            if step_items is not None and bus.listening and not bus.closed:
                step_items(
                    bus.emit,
                    self._now(),
                    session.session_id,
                    step,
                    keys,
                    partials,
                    new_state,
                )
        except BaseException as exc:
            if span is not None:
                span.__exit__(type(exc), exc, exc.__traceback__)
            raise
        if span is not None:
            span.__exit__(None, None, None)
        return StepOutcome(step, ran, skipped, outcome, frontier_outcome)

    def _report_gated(
        self, session: Session, gated: tuple[str, ...], step: int, bus: EventBus
    ) -> None:
        # Version gating is the documented rule, but never silent.
        if bus.closed:
            return
        for node in gated:
            bus.emit(
                DiagnosticEvent(
                    scope=GATED_SCOPE,
                    message=f"node {node!r} skipped at step {step}: nothing it reads"
                    " changed since it last ran (add_node(..., gated=False) runs it"
                    " whenever it is scheduled)",
                    metadata=MappingProxyType(
                        {"node": node, "step": step, "session_id": session.session_id}
                    ),
                )
            )

    def _report_conflicts(
        self, session: Session, step: int, outcome: BarrierOutcome, bus: EventBus
    ) -> None:
        if bus.closed:
            return
        for conflict in outcome.conflicts:
            bus.emit(
                DiagnosticEvent(
                    scope=KEY_CONFLICT_SCOPE,
                    message=conflict.describe(),
                    metadata=MappingProxyType(
                        {
                            "key": conflict.key,
                            "nodes": list(conflict.nodes),
                            "winner": conflict.winner,
                            "step": step,
                            "session_id": session.session_id,
                        }
                    ),
                )
            )

    def _fail(
        self,
        session: Session,
        event: ErrorEvent,
        cause: BaseException | None,
        bus: EventBus,
        step: int | None = None,
        kind: type[WorkflowError] = WorkflowError,
    ) -> NoReturn:
        """Record ``event`` as the session's failure and raise ``kind``.

        The session stays at its last committed step (nothing of the failed
        step is committed; finished nodes' partials stay pending), so resuming
        retries the step. The raised error's ``state`` shows the error appended
        to the errors channel, for reporting.
        """
        session.error = event
        shown = attrs.evolve(session.state, errors=session.state.errors.append(event))
        logger.debug("session %s failed: %s", session.session_id, event)
        error = kind(
            event,
            state=shown,
            session_id=session.session_id,
            step=session.step if step is None else step,
        )
        if cause is not None:
            raise error from cause
        raise error

    # ---------------------------------------------------------------- nodes

    async def _run_nodes(
        self,
        names: Sequence[str],
        snapshot: StateSnapshot,
        step: int,
        session: Session,
        bus: EventBus,
        emit: Callable[[Event], None] | None,
        finished: dict[str, NodePartial | None],
        sends: Sequence[tuple[int, Send]] = (),
    ) -> None:
        """Run the nodes of one superstep concurrently; record each result.

        ``emit``: where the nodes' lifecycle events go (``None``: nowhere).

        Each node's partial goes into ``finished`` (by `task_key`) the moment
        the node returns, so a failure or a cancellation keeps what already
        finished. ``sends`` are the step's `Send` tasks still to run, with
        their index: after the named nodes, in send order.

        Nodes are taken from a queue in frontier order by workers. The first worker
        is the calling task itself; another worker task is started only when a
        running node actually suspends while nodes are still waiting, and never
        more than ``concurrency_limit`` at once (a `trio.CapacityLimiter`). Nodes
        that finish without blocking therefore cost no task at all, while nodes
        that wait on I/O all wait concurrently.
        """
        nodes = self.graph.nodes
        specs = [nodes[name] for name in names]
        tasks: list[tuple[int, Any] | None] = []
        if sends:
            tasks = [None] * len(specs)
            for index, send in sends:
                specs.append(nodes[send.node])
                tasks.append((index, send.payload))
        count = len(specs)
        if count == 0:
            return
        if count == 1 and not tasks:
            spec = specs[0]
            try:
                finished[spec.name] = await self._call(
                    spec, snapshot, step, session, bus, emit
                )
            except InterruptSignal as signal:
                raise _StepInterrupted([signal.interrupt]) from None
            except Exception as exc:
                raise _NodeFailed(spec.name, exc) from exc
            return
        interrupted: list[tuple[int, Interrupt]] = []

        pending = deque(range(count))
        failures: list[_NodeFailed] = []
        limiter = (
            trio.CapacityLimiter(self.config.concurrency_limit)
            if self.config.concurrency_limit is not None
            else None
        )

        async with trio.open_nursery() as nursery:

            def claim() -> object | None:
                """A token for one more worker, or None at the concurrency limit."""
                token = object()
                if limiter is not None:
                    try:
                        limiter.acquire_on_behalf_of_nowait(token)
                    except trio.WouldBlock:
                        return None
                return token

            def spawn_if_needed() -> None:
                if pending and not failures:
                    token = claim()
                    if token is not None:
                        nursery.start_soon(work, token)

            async def work(token: object) -> None:
                try:
                    while pending and not failures:
                        index = pending.popleft()
                        spec = specs[index]
                        sent = tasks[index] if tasks else None
                        if sent is None:
                            key = spec.name
                            call = self._call(spec, snapshot, step, session, bus, emit)
                        else:
                            key = task_key(spec.name, sent[0])
                            call = self._call(
                                spec,
                                snapshot,
                                step,
                                session,
                                bus,
                                emit,
                                sent[0],
                                sent[1],
                            )
                        try:
                            finished[key] = await _on_suspend(call, spawn_if_needed)
                        except InterruptSignal as signal:
                            # Siblings go on: every interrupt of the step is
                            # collected and can be answered together.
                            interrupted.append((index, signal.interrupt))
                        except Exception as exc:
                            failures.append(_NodeFailed(key, exc))
                            nursery.cancel_scope.cancel(f"node {key!r} failed")
                            return
                finally:
                    if limiter is not None:
                        limiter.release_on_behalf_of(token)

            first = claim()
            assert first is not None  # a fresh limiter always has a token
            await work(first)
        if failures:
            first_failure = failures[0]
            raise first_failure from first_failure.exc
        if interrupted:
            raise _StepInterrupted([i for _, i in sorted(interrupted)])

    async def _call(
        self,
        spec: NodeSpec,
        snapshot: StateSnapshot,
        step: int,
        session: Session,
        bus: EventBus,
        emit: Callable[[Event], None] | None,
        task: int | None = None,
        payload: Any = None,
    ) -> NodePartial | None:
        """Call ``spec`` once, or more per its retry policy; enforce its timeout.

        ``emit``: where its lifecycle events go (``None``: nobody listens; the
        step checked once). ``task`` and ``payload``: the `Send` this call
        runs, if any.
        """
        retry = spec.retry
        attempt = 1
        sid = session.session_id
        host = self.host
        path = (  # a subgraph's node: its events carry the path
            [*host.path, task_key(spec.name, task)]
            if emit is not None and host is not None and host.path
            else None
        )
        while True:
            ctx = NodeContext(
                spec.name,
                step,
                sid,
                bus,
                self.config.clock,
                attempt,
                session,
                self.persist,
                task,
                payload,
                self.host,
            )
            with self.tracing.node(sid, step, spec.name, attempt, task) as span:
                if emit is not None:
                    start = lifecycle.node_start(
                        self._now(), sid, spec.name, step, attempt, task, path
                    )
                    emit(start)
                    started = time.perf_counter()
                try:
                    if spec.timeout is None:
                        result = await spec.body(snapshot, ctx)
                    else:
                        try:
                            with trio.fail_after(spec.timeout):
                                result = await spec.body(snapshot, ctx)
                        except trio.TooSlowError:
                            error = NodeTimeoutError(spec.name, spec.timeout)
                            span.mark_timeout(spec.timeout, error)
                            raise error from None
                    partial = _check_output(spec.name, result)
                    if emit is not None:
                        emit(
                            lifecycle.node_end(
                                start,
                                self._now(),
                                time.perf_counter() - started,
                                partial,
                            )
                        )
                    return partial
                except Exception as exc:
                    if (
                        isinstance(exc, NodeOutputError)
                        or retry is None
                        or attempt >= retry.max_attempts
                        or not isinstance(exc, retry.retry_on)
                    ):
                        if emit is not None:
                            emit(
                                lifecycle.node_error(
                                    start, self._now(), describe_exception(exc)
                                )
                            )
                        raise
                    delay = retry.delay(attempt)
                    span.retry(exc, delay)
                    if emit is not None:
                        emit(
                            lifecycle.node_retry(
                                start, self._now(), describe_exception(exc), delay
                            )
                        )
                    logger.info(
                        "node %r attempt %d failed (%s); retrying in %.3gs",
                        spec.name,
                        attempt,
                        describe_exception(exc),
                        delay,
                    )
            attempt += 1
            await trio.sleep(delay)

    # ---------------------------------------------------------------- whole runs

    async def run_to_completion(
        self,
        session: Session,
        bus: EventBus,
        *,
        after_step: AfterStep | None = None,
        interrupt_before: Collection[str] = (),
        interrupt_after: Collection[str] = (),
    ) -> VersionedState:
        """Run supersteps until the frontier is exhausted; return the final state.

        ``after_step(session, outcome)`` is awaited after every successful step,
        and with ``None`` after a failed one (then `WorkflowError` propagates).
        `Paused` propagates when a node interrupts, when the frontier holds a
        node of ``interrupt_before`` (nothing of that step runs; the next run
        passes this breakpoint once), or after a step that ran a node of
        ``interrupt_after`` (saved first). ``"*"`` matches every node. Emits no
        sentinel: the runner owns the run's lifecycle. A checkpoint.
        """
        # Yielding costs ~10 µs, more than a whole superstep of quick nodes, so
        # the loop checks for cancellation every step but yields to other tasks
        # only once per _YIELD_INTERVAL of wall time (nodes that await real I/O
        # yield on their own anyway).
        last_yield = time.perf_counter()
        while not is_complete(session.frontier, session.sends):
            await trio.lowlevel.checkpoint_if_cancelled()
            if interrupt_before:
                node = breakpoint_match(
                    [*session.frontier, *(s.node for s in session.sends)]
                    if session.sends
                    else session.frontier,
                    interrupt_before,
                )
                if node is not None and session.breakpoint_hit != session.step + 1:
                    session.breakpoint_hit = session.step + 1
                    raise Paused("before_node", node=node)
            if after_step is None:
                outcome = await self._step(session, bus)
            else:
                try:
                    outcome = await self._step(session, bus)
                except WorkflowError:
                    await after_step(session, None)
                    raise
                await after_step(session, outcome)
            session.breakpoint_hit = None
            if interrupt_after and outcome is not None:
                node = breakpoint_match(outcome.ran, interrupt_after)
                if node is not None:
                    raise Paused("after_node", node=node, outcome=outcome)
            now = time.perf_counter()
            if now - last_yield >= _YIELD_INTERVAL:
                await trio.lowlevel.cancel_shielded_checkpoint()
                last_yield = time.perf_counter()
        return session.state


def emit_stream_end(
    bus: EventBus,
    session: Session,
    status: str,
    error: str | None = None,
    scope: str = STREAM_END_SCOPE,
) -> None:
    """Emit the sentinel (synchronously: safe inside a cancelled scope)."""
    if bus.closed:
        logger.warning(
            "event bus closed before the %s sentinel of session %s",
            status,
            session.session_id,
        )
        return
    bus.emit(stream_end_event(session.session_id, status, session.step, error, scope))
