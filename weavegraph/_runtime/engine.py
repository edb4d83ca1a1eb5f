"""The superstep engine: runs a frontier's nodes in a nursery, then the barrier.

The rules (gating, barrier, next frontier) are the pure functions of ``_core``;
this module only schedules, awaits and turns failures into `ErrorEvent` s.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NoReturn

import attrs
import trio

from .._core.errors import (
    ErrorEvent,
    NodeNotFound,
    NodeOutputError,
    NodeTimeoutError,
    ReducerError,
    RouterError,
    StepLimitExceeded,
    WeaveError,
    WorkflowError,
    describe_exception,
)
from .._core.frontier import is_complete, next_frontier, partition, start_frontier
from .._core.graph import Graph, NodeSpec
from .._core.reducers import apply_barrier
from .._core.session import Session
from .._core.state import FrontierCommand, NodePartial, StateSnapshot, VersionedState
from ..events.bus import EventBus
from ..events.types import STREAM_END_SCOPE, DiagnosticEvent
from .config import RuntimeConfig
from .context import NodeContext

logger = logging.getLogger("weavegraph.runtime")

UNKNOWN_TARGET_SCOPE = "frontier.unknown_target"


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


class Engine:
    """Runs supersteps of one compiled graph under one configuration."""

    def __init__(self, graph: Graph, config: RuntimeConfig) -> None:
        self.graph = graph
        self.config = config
        limit = config.concurrency_limit
        self._limiter = trio.CapacityLimiter(limit) if limit is not None else None

    # ---------------------------------------------------------------- sessions

    def new_session(
        self, session_id: str, state: VersionedState, bus: EventBus
    ) -> Session:
        """A fresh session at step 0 whose frontier comes from START.

        Raises:
            WorkflowError: a router on START failed.
        """
        session = Session(session_id=session_id, state=state)
        try:
            outcome = start_frontier(self.graph, state.snapshot())
        except RouterError as exc:
            self._fail(
                session,
                ErrorEvent.runner(
                    session_id, 0, describe_exception(exc), tags=["runner", "router"]
                ),
                exc,
                bus,
            )
        self._report_dropped(outcome.dropped, bus)
        session.frontier = outcome.frontier
        return session

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
        await trio.lowlevel.checkpoint_if_cancelled()
        frontier = session.frontier
        if is_complete(frontier):
            return StepReport(
                step=session.step,
                ran_nodes=(),
                skipped_nodes=tuple(frontier),
                updated_channels=(),
                errors=(),
                frontier_commands=(),
                next_frontier=(),
                completed=True,
                state=session.state,
            )
        if session.step >= self.config.max_steps:
            limit = self.config.max_steps
            event = ErrorEvent.runner(
                session.session_id,
                session.step,
                f"step limit exceeded: the run did not finish within max_steps={limit}"
                f" supersteps (frontier {list(frontier)}); raise"
                " RuntimeConfig.max_steps or make the loop terminate",
                tags=["runner", "step_limit"],
            )
            self._fail(session, event, None, bus, kind=StepLimitExceeded)

        step = session.step + 1
        state = session.state
        snapshot = state.snapshot()
        gate = state.versions.gate_key()
        to_run, skipped = partition(frontier, session.versions_seen, gate)
        nodes = self.graph.nodes
        for name in to_run:
            if name not in nodes:
                session.step = step
                missing = NodeNotFound(name, step)
                event = ErrorEvent.scheduler(
                    step,
                    str(missing),
                    tags=["scheduler", "node_not_found"],
                    context={"node": name},
                )
                self._fail(session, event, missing, bus)

        try:
            partials = await self._run_nodes(
                to_run, snapshot, step, session.session_id, bus
            )
        except _NodeFailed as failed:
            session.step = step
            exc = failed.exc
            tags = (
                ["node", "timeout"] if isinstance(exc, NodeTimeoutError) else ["node"]
            )
            event = ErrorEvent.node(
                failed.node, step, WeaveError.from_exception(exc), tags=tags, context={}
            )
            self._fail(session, event, exc, bus)

        try:
            outcome = apply_barrier(state, to_run, partials, self.graph.reducers)
            new_state = outcome.state
            frontier_outcome = next_frontier(
                self.graph,
                to_run,
                outcome.frontier_commands,
                new_state.snapshot(),
                session.join_progress,
            )
        except (ReducerError, RouterError) as exc:
            session.step = step
            tag = "reducer" if isinstance(exc, ReducerError) else "router"
            event = ErrorEvent.runner(
                session.session_id,
                step,
                describe_exception(exc),
                tags=["runner", tag],
                context={"frontier": list(frontier)},
            )
            self._fail(session, event, exc, bus)

        seen = session.versions_seen
        for name in to_run:
            seen[name] = gate
        session.step = step
        session.state = new_state
        session.frontier = frontier_outcome.frontier
        session.join_progress = frontier_outcome.join_progress
        self._report_dropped(frontier_outcome.dropped, bus)
        return StepReport(
            step=step,
            ran_nodes=tuple(to_run),
            skipped_nodes=tuple(skipped),
            updated_channels=outcome.updated_channels,
            errors=outcome.errors,
            frontier_commands=outcome.frontier_commands,
            next_frontier=frontier_outcome.frontier,
            completed=is_complete(frontier_outcome.frontier),
            state=new_state,
        )

    def _report_dropped(
        self, dropped: Sequence[tuple[str, str]], bus: EventBus
    ) -> None:
        for source, target in dropped:
            if not bus.closed:
                bus.emit(
                    DiagnosticEvent(
                        scope=UNKNOWN_TARGET_SCOPE,
                        message=f"dropped unknown target {target!r} routed from"
                        f" {source!r}",
                    )
                )

    def _fail(
        self,
        session: Session,
        event: ErrorEvent,
        cause: BaseException | None,
        bus: EventBus,
        kind: type[WorkflowError] = WorkflowError,
    ) -> NoReturn:
        """Record ``event`` in the session's state and raise ``kind``."""
        session.state = attrs.evolve(
            session.state, errors=session.state.errors.append(event)
        )
        logger.debug("session %s failed: %s", session.session_id, event)
        error = kind(
            event, state=session.state, session_id=session.session_id, step=session.step
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
        session_id: str,
        bus: EventBus,
    ) -> list[NodePartial | None]:
        specs = [self.graph.nodes[name] for name in names]
        if not specs:
            await trio.lowlevel.checkpoint()
            return []
        if len(specs) == 1:
            # One node needs no nursery: run it in this task.
            spec = specs[0]
            try:
                if self._limiter is None:
                    result = await self._call(spec, snapshot, step, session_id, bus)
                else:
                    async with self._limiter:
                        result = await self._call(spec, snapshot, step, session_id, bus)
            except Exception as exc:
                raise _NodeFailed(spec.name, exc) from exc
            await trio.lowlevel.checkpoint()
            return [result]

        results: list[NodePartial | None] = [None] * len(specs)
        failures: list[_NodeFailed] = []
        limiter = self._limiter

        async def run_one(index: int, spec: NodeSpec, cancel: trio.CancelScope) -> None:
            try:
                if limiter is None:
                    results[index] = await self._call(
                        spec, snapshot, step, session_id, bus
                    )
                else:
                    async with limiter:
                        results[index] = await self._call(
                            spec, snapshot, step, session_id, bus
                        )
            except Exception as exc:
                failures.append(_NodeFailed(spec.name, exc))
                cancel.cancel(f"node {spec.name!r} failed")

        async with trio.open_nursery() as nursery:
            for index, spec in enumerate(specs):
                nursery.start_soon(run_one, index, spec, nursery.cancel_scope)
        if failures:
            first = failures[0]
            raise first from first.exc
        return results

    async def _call(
        self,
        spec: NodeSpec,
        snapshot: StateSnapshot,
        step: int,
        session_id: str,
        bus: EventBus,
    ) -> NodePartial | None:
        """Call ``spec`` once, or more per its retry policy; enforce its timeout."""
        retry = spec.retry
        attempt = 1
        while True:
            ctx = NodeContext(
                spec.name, step, session_id, bus, self.config.clock, attempt
            )
            try:
                if spec.timeout is None:
                    result = await spec.body(snapshot, ctx)
                else:
                    try:
                        with trio.fail_after(spec.timeout):
                            result = await spec.body(snapshot, ctx)
                    except trio.TooSlowError:
                        raise NodeTimeoutError(spec.name, spec.timeout) from None
                return _check_output(spec.name, result)
            except NodeOutputError:
                raise
            except Exception as exc:
                if (
                    retry is None
                    or attempt >= retry.max_attempts
                    or not isinstance(exc, retry.retry_on)
                ):
                    raise
                delay = retry.delay(attempt)
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
        self, session: Session, bus: EventBus
    ) -> VersionedState:
        """Run supersteps until the frontier is exhausted, then emit the sentinel.

        Exactly one stream-end diagnostic is emitted whatever happens:
        ``status=completed``, ``status=error`` (then `WorkflowError` propagates) or
        ``status=cancelled`` (cancellation or KeyboardInterrupt propagates).
        """
        status = "cancelled"
        error_text: str | None = None
        try:
            while not is_complete(session.frontier):
                await self.run_step(session, bus)
            status = "completed"
            return session.state
        except WorkflowError as exc:
            status = "error"
            error_text = exc.error_event.error.message
            raise
        except Exception as exc:
            status = "error"
            error_text = describe_exception(exc)
            raise
        finally:
            emit_stream_end(bus, session, status, error_text)


def end_message(
    session_id: str, status: str, step: int, error: str | None = None
) -> str:
    """The stream-end sentinel's message text."""
    text = f"session={session_id} status={status} step={step}"
    if error is not None:
        text += f" error={error}"
    return text


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
    bus.emit(
        DiagnosticEvent(
            scope=scope,
            message=end_message(session.session_id, status, session.step, error),
        )
    )
