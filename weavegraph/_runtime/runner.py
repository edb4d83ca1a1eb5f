"""`AppRunner` and `open_runner`: sessions, stepping, interrupts, persistence.

The runner owns, for the lifetime of its ``async with`` block, the event bus it
publishes to and a checkpoint writer task. Checkpoints are written behind the
run: each superstep hands its checkpoint to the writer, which stores what has
accumulated in one transaction per batch, so a fast run is not slowed down by a
thread hop per step. `AppRunner.flush` waits until everything handed over is
stored; `run_until_complete`, `invoke_next` and leaving the block flush (leaving a
cancelled block flushes in a shielded scope, for at most `FLUSH_TIMEOUT`
seconds). A crash loses at most the checkpoints not yet flushed: a resumed
session continues from its last stored step, which is always a complete one.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal

import attrs
import trio

from .._core.errors import (
    CheckpointError,
    InvalidEntryError,
    SessionNotFound,
    StateError,
    WorkflowError,
)
from .._core.frontier import is_complete, start_frontier
from .._core.graph import END, START, display
from .._core.reducers import apply_barrier
from .._core.session import Session
from .._core.state import NodePartial, VersionedState
from .._trio import open_service_nursery
from ..checkpoint.record import Checkpoint, Checkpointer
from ..events.bus import EventBus, Overflow
from ..events.stream import EventStream
from ..events.types import INVOCATION_END_SCOPE, STREAM_END_SCOPE
from .app import App
from .config import RuntimeConfig
from .engine import Engine, StepReport, emit_stream_end

logger = logging.getLogger("weavegraph.runner")

FLUSH_TIMEOUT = 10.0
"""Seconds a cancelled runner waits for its last checkpoints to be stored."""

_QUEUE_SIZE = 256


@attrs.frozen(kw_only=True)
class SessionInit:
    """What `AppRunner.create_session` did.

    Attributes:
        session_id: The session.
        resumed: Whether it continued from a stored checkpoint.
        step: The step it starts from (the checkpoint's step when resumed).
    """

    session_id: str
    resumed: bool
    step: int = 0

    @property
    def fresh(self) -> bool:
        """Whether the session started from the given state."""
        return not self.resumed


PauseReason = Literal["before_node", "after_node", "after_step"]


@attrs.frozen(kw_only=True)
class PausedReport:
    """`AppRunner.run_step` stopped at an interrupt.

    Attributes:
        session_id: The session.
        step: The session's step counter now.
        reason: ``"before_node"`` (nothing ran), ``"after_node"`` or
            ``"after_step"`` (the step's effects are committed and saved).
        node: The node the interrupt matched (not for ``"after_step"``).
        state: The session's state now.
        report: The step that ran, for the ``after_*`` reasons.
    """

    session_id: str
    step: int
    reason: PauseReason
    node: str | None
    state: VersionedState
    report: StepReport | None = None

    completed = False


@attrs.frozen(kw_only=True)
class RunMetadata:
    """Identifies what produced a run (recorded with its checkpoints)."""

    weavegraph_version: str
    graph_hash: str
    config_hash: str
    checkpointer_backend: str
    clock_mode: str


@attrs.define
class _SessionSlot:
    session: Session
    iterative: bool = False
    entry: tuple[str, ...] = ()
    lock: trio.Lock = attrs.field(factory=trio.Lock)


class AppRunner:
    """Runs sessions of one ``App``; get one from `open_runner`."""

    def __init__(
        self,
        app: App,
        *,
        checkpointer: Checkpointer | None,
        bus: EventBus,
        autosave: bool,
        config: RuntimeConfig,
        nursery: trio.Nursery,
    ) -> None:
        self.app = app
        self.checkpointer = checkpointer
        self.autosave = autosave
        self.config = config
        self.event_bus = bus
        self._engine = Engine(app.graph, config)
        self._config_hash = config.config_hash  # computed once, stored per step
        self._sessions: dict[str, _SessionSlot] = {}
        self._send, self._receive = trio.open_memory_channel[Checkpoint](_QUEUE_SIZE)
        self._queued = 0
        self._idle = trio.Event()
        self._idle.set()
        self._writer_error: BaseException | None = None
        self._writer_scope: trio.CancelScope | None = None
        self._writer_done = trio.Event()
        if checkpointer is not None:
            nursery.start_soon(self._write_checkpoints)
        else:
            self._writer_done.set()

    # ------------------------------------------------------------ persistence

    async def _write_checkpoints(self) -> None:
        # Shielded: the runner's exit decides how long pending writes may take.
        assert self.checkpointer is not None
        save_many = getattr(self.checkpointer, "save_many", None)
        try:
            with trio.CancelScope(shield=True) as scope:
                self._writer_scope = scope
                with self._receive:
                    async for first in self._receive:
                        # Everything queued goes in one transaction: a fast run
                        # hands over many checkpoints between two yields.
                        batch = [first]
                        while True:
                            try:
                                batch.append(self._receive.receive_nowait())
                            except (trio.WouldBlock, trio.EndOfChannel):
                                break
                        try:
                            if save_many is not None:
                                await save_many(batch)
                            else:
                                for checkpoint in batch:
                                    await self.checkpointer.save(checkpoint)
                        except Exception as exc:
                            logger.error("checkpoint write failed: %s", exc)
                            self._writer_error = exc
                        self._queued -= len(batch)
                        if self._queued == 0:
                            self._idle.set()
        finally:
            self._writer_done.set()
            self._idle.set()

    def _checkpoint(
        self,
        session: Session,
        ran: Sequence[str] = (),
        skipped: Sequence[str] = (),
        updated: Sequence[str] = (),
    ) -> Checkpoint:
        return Checkpoint.from_session(
            session,
            concurrency_limit=self.config.concurrency_limit,
            ran_nodes=tuple(ran),
            skipped_nodes=tuple(skipped),
            updated_channels=tuple(updated),
            graph_hash=self.app.graph.graph_hash,
            config_hash=self._config_hash,
        )

    async def _enqueue(self, checkpoint: Checkpoint) -> None:
        self._raise_writer_error()
        if self.checkpointer is None:
            return
        self._queued += 1
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        try:
            # No yield per step: the writer picks the queue up whenever the run
            # yields (at least every few milliseconds), in one batch.
            self._send.send_nowait(checkpoint)
        except trio.WouldBlock:
            await self._send.send(checkpoint)

    def _raise_writer_error(self) -> None:
        if self._writer_error is not None:
            raise CheckpointError(
                f"storing checkpoints failed: {self._writer_error}"
            ) from self._writer_error

    async def flush(self) -> None:
        """Wait until every checkpoint handed to the writer is stored.

        A checkpoint. Raises `CheckpointError` if a write failed.
        """
        if self._queued:
            await self._idle.wait()
        else:
            await trio.lowlevel.checkpoint()
        self._raise_writer_error()

    async def _flush_after(self, exc: BaseException) -> None:
        """Store what a failed or cancelled run handed over; ``exc`` then goes on.

        After a cancellation the flush is shielded and bounded by `FLUSH_TIMEOUT`.
        A write error here is only logged: the original exception matters more.
        """
        if self.checkpointer is None:
            return
        try:
            if isinstance(exc, trio.Cancelled | KeyboardInterrupt):
                with trio.CancelScope(shield=True), trio.move_on_after(FLUSH_TIMEOUT):
                    await self.flush()
            else:
                await self.flush()
        except CheckpointError as write_error:
            logger.error("checkpoints of a failed run were not stored: %s", write_error)

    async def _close(self, cancelled: bool) -> None:
        self._send.close()
        if cancelled:
            with trio.CancelScope(shield=True), trio.move_on_after(FLUSH_TIMEOUT):
                await self._writer_done.wait()
        else:
            await self._writer_done.wait()
        if self._writer_scope is not None:
            self._writer_scope.cancel()

    # --------------------------------------------------------------- sessions

    def _slot(self, session_id: str) -> _SessionSlot:
        slot = self._sessions.get(session_id)
        if slot is None:
            raise SessionNotFound(session_id)
        return slot

    def get_session(self, session_id: str) -> Session:
        """The live `Session` record (state, step, frontier …) of ``session_id``.

        Raises:
            SessionNotFound: no such session in this runner.
        """
        return self._slot(session_id).session

    def list_sessions(self) -> list[str]:
        """Ids of the sessions this runner holds."""
        return list(self._sessions)

    def run_metadata(self) -> RunMetadata:
        """Version, graph and config hashes, backend and clock mode."""
        from .. import __version__

        backend = "none"
        if self.checkpointer is not None:
            backend = getattr(
                self.checkpointer, "backend", type(self.checkpointer).__name__
            )
        return RunMetadata(
            weavegraph_version=__version__,
            graph_hash=self.app.graph.graph_hash,
            config_hash=self.config.config_hash,
            checkpointer_backend=backend,
            clock_mode=self.config.clock_mode,
        )

    def event_stream(
        self,
        capacity: int | None = None,
        overflow: Overflow | None = None,
        *,
        stop_at_stream_end: bool = False,
    ) -> EventStream:
        """A new subscription to this runner's events (from now on).

        It ends when the runner closes, or after the next stream-end sentinel
        with ``stop_at_stream_end=True``.
        """
        return self.event_bus.subscribe(
            capacity, overflow, stop_at_stream_end=stop_at_stream_end
        )

    async def create_session(
        self, session_id: str, state: VersionedState
    ) -> SessionInit:
        """Start ``session_id`` from ``state``, or resume it from its checkpoint.

        When the checkpointer holds the session, it continues from its latest
        checkpoint and ``state`` is ignored. A fresh session saves its step-0
        checkpoint. A checkpoint; cancelling it leaves no session behind.

        Raises:
            CheckpointError: the stored session is unreadable.
            WorkflowError: a router on START failed.
        """
        if not isinstance(session_id, str) or not session_id:
            raise StateError(f"session ids are non-empty strings, got {session_id!r}")
        if not isinstance(state, VersionedState):
            raise StateError(
                f"create_session takes a VersionedState, got {type(state).__name__}"
            )
        if self.checkpointer is not None:
            stored = await self.checkpointer.load_latest(session_id)
            if stored is not None:
                self._check_graph(stored)
                self._sessions[session_id] = _SessionSlot(stored.to_session())
                return SessionInit(
                    session_id=session_id, resumed=True, step=stored.step
                )
        else:
            await trio.lowlevel.checkpoint()
        session = self._engine.new_session(session_id, state, self.event_bus)
        self._sessions[session_id] = _SessionSlot(session)
        await self._enqueue(self._checkpoint(session))
        return SessionInit(session_id=session_id, resumed=False, step=0)

    def _check_graph(self, stored: Checkpoint) -> None:
        if stored.graph_hash and stored.graph_hash != self.app.graph.graph_hash:
            logger.warning(
                "session %s was stored by a different graph (hash %s, now %s);"
                " resuming anyway",
                stored.session_id,
                stored.graph_hash,
                self.app.graph.graph_hash,
            )

    async def _after_step(self, session: Session, result: Any) -> None:
        """Hand the step's checkpoint to the writer (``result`` None: a failed step)."""
        if self.checkpointer is None or not self.autosave:
            return
        if result is None:
            await self._enqueue(self._checkpoint(session))
            return
        _, ran, skipped, outcome, _ = result
        await self._enqueue(
            self._checkpoint(session, ran, skipped, outcome.updated_channels)
        )

    async def _complete(self, session: Session, end_scope: str) -> VersionedState:
        """Run ``session`` to completion, then flush its checkpoints."""
        try:
            state = await self._engine.run_to_completion(
                session,
                self.event_bus,
                after_step=self._after_step,
                end_scope=end_scope,
            )
        except BaseException as exc:
            await self._flush_after(exc)
            raise
        await self.flush()
        return state

    async def run_step(
        self,
        session_id: str,
        *,
        interrupt_before: Collection[str] = (),
        interrupt_after: Collection[str] = (),
        interrupt_each_step: bool = False,
    ) -> StepReport | PausedReport:
        """Run one superstep of ``session_id``.

        With ``interrupt_before``, nothing runs if a listed node is in the
        frontier: a `PausedReport` (``"before_node"``) comes back instead, and
        calling again with the same options pauses again. With
        ``interrupt_after`` (or ``interrupt_each_step``) the step runs, is saved,
        and a `PausedReport` says which listed node ran. A checkpoint.

        Raises:
            SessionNotFound: unknown session.
            WorkflowError: the step failed (recorded and saved first).
        """
        slot = self._slot(session_id)
        async with slot.lock:
            session = slot.session
            for node in session.frontier:
                if node in interrupt_before and node not in (START, END):
                    await trio.lowlevel.checkpoint()
                    return PausedReport(
                        session_id=session_id,
                        step=session.step,
                        reason="before_node",
                        node=node,
                        state=session.state,
                    )
            before = session.step
            try:
                report = await self._engine.run_step(session, self.event_bus)
            except WorkflowError:
                await self._after_step(session, None)
                raise
            if self.autosave and session.step != before:
                await self._enqueue(
                    self._checkpoint(
                        session,
                        report.ran_nodes,
                        report.skipped_nodes,
                        report.updated_channels,
                    )
                )
            for node in report.ran_nodes:
                if node in interrupt_after:
                    return PausedReport(
                        session_id=session_id,
                        step=session.step,
                        reason="after_node",
                        node=node,
                        state=session.state,
                        report=report,
                    )
            if interrupt_each_step and report.ran_nodes:
                return PausedReport(
                    session_id=session_id,
                    step=session.step,
                    reason="after_step",
                    node=None,
                    state=session.state,
                    report=report,
                )
            return report

    async def run_until_complete(self, session_id: str) -> VersionedState:
        """Run ``session_id`` to completion and return its final state.

        Emits the stream-end sentinel (completed, error or cancelled) and flushes
        the checkpoints before returning. A checkpoint.

        Raises:
            SessionNotFound: unknown session.
            WorkflowError: a step failed (it was recorded and saved).
        """
        slot = self._slot(session_id)
        async with slot.lock:
            return await self._complete(slot.session, STREAM_END_SCOPE)

    # ------------------------------------------------------ iterative sessions

    def _entry_frontier(self, entry: str, state: VersionedState) -> tuple[str, ...]:
        if entry == START:
            frontier = start_frontier(self.app.graph, state.snapshot()).frontier
            if is_complete(frontier):
                raise InvalidEntryError(
                    "START leads to no node: the graph has no entry to run from"
                )
            return frontier
        if entry == END:
            raise InvalidEntryError(
                "END cannot be an entry; use START or a registered node name"
            )
        if entry not in self.app.graph.nodes:
            raise InvalidEntryError(
                f"invalid iterative entry node: {display(entry)!r} is not registered"
            )
        return (entry,)

    async def create_iterative_session(
        self, session_id: str, state: VersionedState, entry: str = START
    ) -> SessionInit:
        """Create (or resume) a session that is fed inputs with `invoke_next`.

        ``entry`` is validated before anything is created.

        Raises:
            InvalidEntryError: ``entry`` is END or not a registered node.
        """
        frontier = self._entry_frontier(entry, state)
        init = await self.create_session(session_id, state)
        slot = self._sessions[session_id]
        slot.iterative = True
        slot.entry = frontier
        slot.session.frontier = frontier
        slot.session.versions_seen.clear()
        return init

    async def invoke_next(
        self,
        session_id: str,
        input: NodePartial | None = None,
        entry: str = START,
    ) -> VersionedState:
        """Apply ``input`` to the session's state, then run from ``entry``.

        Gating is reset, so identical inputs are processed again; the step counter
        continues. Ends with an `INVOCATION_END_SCOPE` diagnostic (the stream stays
        open). A checkpoint.

        Raises:
            InvalidEntryError: bad ``entry`` (nothing is applied).
            SessionNotFound: unknown session.
            WorkflowError: a step failed.
        """
        slot = self._slot(session_id)
        if input is not None and not isinstance(input, NodePartial):
            raise StateError(f"invoke_next takes a NodePartial input, got {input!r}")
        frontier = self._entry_frontier(entry, slot.session.state)
        async with slot.lock:
            session = slot.session
            if input is not None:
                session.state = apply_barrier(
                    session.state,
                    [],
                    [attrs.evolve(input, frontier=None)],
                    self.app.graph.reducers,
                ).state
            session.frontier = frontier
            session.versions_seen.clear()
            session.join_progress = {}
            return await self._complete(session, INVOCATION_END_SCOPE)

    async def finish_iterative_session(self, session_id: str) -> VersionedState:
        """End an iterative session: emit its stream-end sentinel, return its state.

        Raises:
            SessionNotFound: unknown session.
        """
        slot = self._slot(session_id)
        async with slot.lock:
            emit_stream_end(self.event_bus, slot.session, "completed", None)
            await self.flush()
            return slot.session.state


@asynccontextmanager
async def open_runner(
    app: App,
    *,
    checkpointer: Checkpointer | None = None,
    event_bus: EventBus | None = None,
    autosave: bool = True,
    config: RuntimeConfig | None = None,
) -> AsyncIterator[AppRunner]:
    """``async with open_runner(app, ...) as runner:`` — an `AppRunner`.

    The block owns the runner's tasks: the event bus (``event_bus``, or one built
    from the config) and the checkpoint writer. Leaving the block flushes the
    checkpoints and closes the bus; the checkpointer stays open (it is yours).

    Args:
        app: The compiled app.
        checkpointer: Where sessions are saved (default: the config's, else none).
        event_bus: A bus to publish to (not yet started).
        autosave: Save a checkpoint after every step.
        config: Overrides ``app.config``.
    """
    if not isinstance(app, App):
        raise StateError(f"open_runner takes a compiled App, got {app!r}")
    cfg = config if config is not None else app.config
    store = checkpointer if checkpointer is not None else cfg.checkpointer
    bus = event_bus if event_bus is not None else cfg.event_bus.build()
    async with bus, open_service_nursery() as nursery:
        runner = AppRunner(
            app,
            checkpointer=store,
            bus=bus,
            autosave=autosave,
            config=cfg,
            nursery=nursery,
        )
        cancelled = True
        try:
            yield runner
            cancelled = False
        finally:
            await runner._close(cancelled)
        runner._raise_writer_error()
