"""`AppRunner` and `open_runner`: sessions, stepping, interrupts, persistence.

The runner owns, for the lifetime of its ``async with`` block, the event bus it
publishes to and (with a checkpointer) a `CheckpointWriter` task that stores
checkpoints behind the run. It also owns each run's lifecycle: whatever happens
(completion, a failure, a cancellation at any instant, even while the session
is loading), a run ends with exactly one stream-end sentinel, published after
the run's checkpoints are stored, so a client that saw it can read the state.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from types import MappingProxyType
from typing import Any, Literal

import attrs
import trio

from .._codec import encode_value
from .._core.errors import (
    ConfigError,
    ErrorEvent,
    InvalidEntryError,
    SessionNotFound,
    StateError,
    WorkflowError,
    describe_exception,
)
from .._core.frontier import is_complete, next_frontier, start_frontier
from .._core.graph import END, START, display
from .._core.reducers import apply_barrier
from .._core.session import Interrupt, Resume, Session, check_session_id, task_key
from .._core.state import NodePartial, VersionedState
from .._core.values import require_storable
from .._trio import open_service_nursery, require_trio
from ..checkpoint.record import Checkpoint, Checkpointer
from ..events.bus import EventBus, Overflow
from ..events.stream import EventStream
from ..events.types import (
    INVOCATION_END_SCOPE,
    STREAM_END_SCOPE,
    DiagnosticEvent,
    stream_end_event,
)
from . import lifecycle
from .app import App
from .config import RuntimeConfig
from .engine import Engine, Paused, StepOutcome, StepReport
from .pending import encode_pending, restore_pending
from .tracing import NO_TRACING
from .writer import CheckpointWriter, PendingRecord

logger = logging.getLogger("weavegraph.runner")


@attrs.frozen(kw_only=True)
class SessionInit:
    """What `AppRunner.create_session` did.

    Attributes:
        session_id: The session.
        resumed: Whether it continued from a stored checkpoint.
        step: The step it starts from (the checkpoint's step when resumed).
        new_turn: Whether the given input started a new turn of a stored
            session (saved as step ``step``).
    """

    session_id: str
    resumed: bool
    step: int = 0
    new_turn: bool = False

    @property
    def fresh(self) -> bool:
        """Whether the session started from the given state."""
        return not self.resumed


PauseReason = Literal["interrupt", "before_node", "after_node", "after_step"]


@attrs.frozen(kw_only=True)
class PausedReport:
    """A run paused: a node interrupted, or a breakpoint matched.

    Attributes:
        session_id: The session.
        step: The session's step counter now.
        reason: ``"interrupt"`` (nodes asked with ``ctx.interrupt``; their
            step is not committed, what finished is kept), ``"before_node"``
            (nothing of the step ran), ``"after_node"`` or ``"after_step"``
            (the step's effects are committed and saved).
        node: The node the breakpoint matched (not for ``"after_step"``; for
            ``"interrupt"``, the first interrupting node).
        state: The session's state now.
        report: The step that ran, for the ``after_*`` reasons.
        interrupts: The pending interrupts (reason ``"interrupt"``).
    """

    session_id: str
    step: int
    reason: PauseReason
    node: str | None
    state: VersionedState
    report: StepReport | None = None
    interrupts: tuple[Interrupt, ...] = ()

    completed = False


@attrs.frozen(kw_only=True)
class SessionState:
    """A session as it is stored (or held by the runner): `AppRunner.get_state`.

    Attributes:
        session_id: The session.
        state: Its state at ``step``.
        step: The step this describes (the latest committed one by default).
        next: The nodes still to run in the next step, in frontier order
            (empty when the session is complete).
        pending_writes: Node → partial of the nodes of the next step that
            already finished in an attempt that failed or was cancelled; a
            resume keeps them and runs only ``next``.
        error: The failure of the last attempt at the next step, or ``None``.
        interrupts: The interrupts the session is paused on (answer them with
            `AppRunner.resume`).
        parent_step: The stored step this one follows (``None`` for step 0).
        forked_from: ``(session_id, step)`` this session was forked from.
    """

    session_id: str
    state: VersionedState
    step: int
    next: tuple[str, ...]
    pending_writes: Mapping[str, NodePartial | None] = attrs.field(
        factory=lambda: MappingProxyType({})
    )
    error: ErrorEvent | None = None
    interrupts: tuple[Interrupt, ...] = ()
    parent_step: int | None = None
    forked_from: tuple[str, int] | None = None

    @property
    def completed(self) -> bool:
        """Whether nothing is left to run."""
        return not self.next and not self.pending_writes and not self.interrupts


def _session_state(
    session: Session,
    parent_step: int | None,
    forked_from: tuple[str, int] | None = None,
) -> SessionState:
    pending = session.pending if session.pending_step == session.step + 1 else {}
    todo = tuple(
        node
        for node in session.frontier
        if node not in (START, END) and node not in pending
    ) + tuple(
        send.node
        for i, send in enumerate(session.sends)
        if task_key(send.node, i) not in pending
    )
    return SessionState(
        session_id=session.session_id,
        state=session.state,
        step=session.step,
        next=todo,
        pending_writes=MappingProxyType(dict(pending)),
        error=session.error,
        interrupts=session.interrupts,
        parent_step=parent_step,
        forked_from=forked_from,
    )


@attrs.frozen(kw_only=True)
class RunMetadata:
    """Identifies what produced a run (recorded with its checkpoints)."""

    weavegraph_version: str
    graph_hash: str
    config_hash: str
    checkpointer_backend: str
    clock_mode: str


def _answer(session: Session, resume: Resume) -> None:
    """Record ``resume``'s answers for the session's pending interrupts."""
    pending = {i.id: i for i in session.interrupts}
    if resume.values is not None:
        unknown = sorted(set(resume.values) - set(pending))
        if unknown:
            raise ConfigError(
                f"no pending interrupt {unknown[0]!r} in session"
                f" {session.session_id!r}; pending: {sorted(pending)}"
            )
        answers = dict(resume.values)
    elif len(pending) > 1:
        raise ConfigError(
            f"session {session.session_id!r} has {len(pending)} pending interrupts:"
            f" answer them by id with values={{...}} ({sorted(pending)})"
        )
    else:
        answers = dict.fromkeys(pending, resume.value)
    for interrupt_id, answer in answers.items():
        require_storable(answer, f"the answer to {interrupt_id!r}")
    # An interrupt's position among its node's answers is its index in its id.
    for interrupt in session.interrupts:
        if interrupt.id in answers:
            session.answers.setdefault(interrupt.key, []).append(answers[interrupt.id])
    session.interrupts = tuple(i for i in session.interrupts if i.id not in answers)


def _drop_pending(session: Session) -> None:
    """New input starts the step over: nothing of an earlier attempt is kept."""
    session.pending = {}
    session.pending_step = None
    session.error = None
    session.interrupts = ()
    session.answers = {}
    session.tasks = {}
    session.breakpoint_hit = None


def _is_empty(state: VersionedState) -> bool:
    """No input at all: no messages, no extra keys, no errors."""
    return not state.messages and not state.extra and not state.errors


_HISTORY_PAGE = 100

INTERRUPT_SCOPE = lifecycle.INTERRUPT
"""Scope of the event that shows each pending interrupt when a run pauses."""


class _Held:
    """``async with lock`` that takes a free lock without a scheduling pass."""

    __slots__ = ("lock",)

    def __init__(self, lock: trio.Lock) -> None:
        self.lock = lock

    async def __aenter__(self) -> None:
        try:
            self.lock.acquire_nowait()
        except trio.WouldBlock:
            await self.lock.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        self.lock.release()


class _RunEnd:
    """Publishes one run's end sentinel, exactly once, with its structured facts."""

    __slots__ = ("bus", "scope", "sent", "session", "session_id")

    def __init__(self, bus: EventBus, session_id: str, scope: str | None) -> None:
        self.bus = bus
        self.session_id = session_id
        self.scope = scope
        self.session: Session | None = None
        self.sent = False

    def completed(self) -> None:
        self._send("completed", None)

    def interrupted(self, interrupts: tuple[Interrupt, ...]) -> None:
        self._send("interrupted", None, interrupts=interrupts)

    def failed(self, exc: BaseException) -> None:
        if isinstance(exc, WorkflowError):
            # The step that failed (the session stays at the one before).
            self._send("error", exc.error_event.error.message, exc.step)
        elif isinstance(exc, Exception):
            self._send("error", describe_exception(exc))
        else:  # trio.Cancelled, KeyboardInterrupt, GeneratorExit …
            self._send("cancelled", None)

    def _send(
        self,
        status: str,
        error: str | None,
        step: int | None = None,
        interrupts: tuple[Interrupt, ...] = (),
    ) -> None:
        # Synchronous: safe inside a cancelled scope.
        if self.sent:
            return
        self.sent = True
        if self.scope is None:  # a subgraph's run: the parent's run ends streams
            return
        if step is None:
            step = self.session.step if self.session is not None else 0
        if self.bus.closed:
            logger.warning(
                "event bus closed before the %s sentinel of session %s",
                status,
                self.session_id,
            )
            return
        event = stream_end_event(self.session_id, status, step, error, self.scope)
        gated = self.session.gated_out if self.session is not None else ()
        if status == "completed" and gated:
            # Version gating ended the run: say so, never a silent "completed".
            event = attrs.evolve(
                event,
                metadata=MappingProxyType(
                    {**event.metadata, "ended_by": "gating", "gated_out": list(gated)}
                ),
            )
        if interrupts:
            event = attrs.evolve(
                event,
                metadata=MappingProxyType(
                    {
                        **event.metadata,
                        "interrupts": [
                            {
                                "id": i.id,
                                "node": i.node,
                                "payload": encode_value(i.payload),
                            }
                            for i in interrupts
                        ],
                    }
                ),
            )
        self.bus.emit(event)


class _Children:
    """What a runner gives its subgraph nodes: their path, a store, runners."""

    __slots__ = ("_memory", "path", "runner")

    def __init__(self, runner: AppRunner, path: tuple[str, ...]) -> None:
        self.runner = runner
        self.path = path
        self._memory: Checkpointer | None = None

    def child_store(self) -> Checkpointer:
        """The parent's store, or (without one) a memory store of this runner."""
        if self.runner.checkpointer is not None:
            return self.runner.checkpointer
        if self._memory is None:
            from ..checkpoint.memory import InMemoryCheckpointer

            self._memory = InMemoryCheckpointer()
        return self._memory

    def keeps_in_memory(self, store: Checkpointer) -> bool:
        """Whether ``store`` is the memory store of a runner without one."""
        return self._memory is not None and store is self._memory

    def child_runner(
        self,
        app: App,
        store: Checkpointer,
        nursery: trio.Nursery,
        path: tuple[str, ...],
    ) -> AppRunner:
        """A runner of ``app`` on the parent's bus, its tasks in ``nursery``."""
        parent = self.runner.config
        config = attrs.evolve(
            app.config,
            checkpointer=None,
            lifecycle_events=parent.lifecycle_events,
            tracing=parent.tracing,
            clock=parent.clock if parent.clock is not None else app.config.clock,
        )
        runner = AppRunner(
            app,
            checkpointer=store,
            bus=self.runner.event_bus,
            autosave=True,
            config=config,
            nursery=nursery,
        )
        runner._nested = True
        runner._engine.host = _Children(runner, path)
        if self._memory is not None:
            runner._engine.host._memory = self._memory
        return runner


@attrs.define
class _SessionSlot:
    session: Session
    stored_step: int | None = None  # the latest step handed to the writer
    parent_step: int | None = None  # the step that one follows
    iterative: bool = False
    entry: tuple[str, ...] = ()
    lock: trio.Lock = attrs.field(factory=trio.Lock)
    forked_from: tuple[str, int] | None = None


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
        nursery: trio.Nursery | None,
    ) -> None:
        self.app = app
        self.checkpointer = checkpointer
        self.autosave = autosave
        self.config = config
        self.event_bus = bus
        self._engine = Engine(app.graph, config)
        self._config_hash = ""  # computed on the first checkpoint, stored per step
        self._sessions: dict[str, _SessionSlot] = {}
        self._writer = (
            CheckpointWriter(checkpointer, nursery)
            if checkpointer is not None and nursery is not None
            else None
        )
        self._engine.persist = self._persist
        self._engine.host = _Children(self, ())
        self._nested = False

    # ------------------------------------------------------------ persistence

    def _checkpoint(
        self,
        session: Session,
        ran: Sequence[str] = (),
        skipped: Sequence[str] = (),
        updated: Sequence[str] = (),
        parent_step: int | None = None,
        forked_from: tuple[str, int] | None = None,
    ) -> Checkpoint:
        return Checkpoint.from_session(
            session,
            concurrency_limit=self.config.concurrency_limit,
            ran_nodes=tuple(ran),
            skipped_nodes=tuple(skipped),
            updated_channels=tuple(updated),
            graph_hash=self.app.graph.graph_hash,
            config_hash=self._config_hash or self._hash_config(),
            parent_step=parent_step,
            forked_from=forked_from,
        )

    def _hash_config(self) -> str:
        self._config_hash = self.config.config_hash
        return self._config_hash

    async def flush(self) -> None:
        """Wait until every checkpoint handed to the writer is stored.

        A checkpoint. Raises `CheckpointError` if a write failed.
        """
        if self._writer is None:
            await trio.lowlevel.checkpoint()
        else:
            await self._writer.flush()

    async def _save(
        self,
        session: Session,
        outcome: StepOutcome | None,
        ran: Sequence[str] = (),
        updated: Sequence[str] = (),
    ) -> None:
        """The one save path: hand the session's checkpoint to the writer.

        ``outcome`` is the step that just ran (``None``: a fresh session, a new
        turn or a state edit, described by ``ran`` and ``updated``). Each
        checkpoint names the step it follows, so a writer that lost a race for
        the session fails with `CheckpointConflict`.
        """
        if self._writer is None:
            return
        slot = self._sessions[session.session_id]
        if outcome is None:
            checkpoint = self._checkpoint(
                session,
                ran,
                (),
                updated,
                parent_step=slot.stored_step,
                forked_from=slot.forked_from,
            )
        else:
            checkpoint = self._checkpoint(
                session,
                outcome.ran,
                outcome.skipped,
                outcome.barrier.updated_channels,
                parent_step=slot.stored_step,
                forked_from=slot.forked_from,
            )
        slot.parent_step, slot.stored_step = slot.stored_step, session.step
        await self._writer.put(checkpoint)

    async def _save_pending(self, session: Session) -> None:
        """Store what a failed or cancelled step finished, and the failure.

        Attached to the session's last stored step: no step is added, so a
        resume that fails again stores no extra step.
        """
        if self._writer is None:
            return
        slot = self._sessions.get(session.session_id)
        if slot is None or slot.stored_step is None:
            return
        record = encode_pending(session)
        if record is None:
            return
        await self._writer.put(
            PendingRecord(session.session_id, slot.stored_step, record)
        )

    async def _autosave(self, session: Session, outcome: StepOutcome | None) -> None:
        if not self.autosave:
            return
        if outcome is None:
            await self._save_pending(session)
        else:
            await self._save(session, outcome)

    async def _close(self, cancelled: bool) -> None:
        if self._writer is not None:
            await self._writer.close(cancelled)

    def _raise_writer_error(self) -> None:
        if self._writer is not None:
            self._writer.raise_error()

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

    async def get_state(
        self, session_id: str, *, step: int | None = None
    ) -> SessionState:
        """The session at its latest step (or at ``step``), with what is pending.

        Reads the store when this runner does not hold the session (or when a
        past ``step`` is asked for). A checkpoint.

        Raises:
            InvalidSessionIdError: ``session_id`` breaks the session id rule.
            SessionNotFound: no such session (or no such stored step).
            CheckpointError: the stored session is unreadable.
        """
        check_session_id(session_id)
        slot = self._sessions.get(session_id)
        if slot is not None and (step is None or step == slot.session.step):
            await trio.lowlevel.checkpoint()
            return _session_state(slot.session, slot.parent_step, slot.forked_from)
        if self.checkpointer is None:
            await trio.lowlevel.checkpoint()
            raise SessionNotFound(session_id)
        if step is None:
            stored = await self.checkpointer.load_latest(session_id)
        else:
            page = await self.checkpointer.query_steps(
                session_id, min_step=step, max_step=step, limit=1
            )
            stored = page.checkpoints[0] if page.checkpoints else None
        if stored is None:
            raise SessionNotFound(session_id)
        session = stored.to_session()
        restore_pending(session, stored.pending)
        return _session_state(session, stored.parent_step, stored.forked_from)

    async def update_state(
        self, session_id: str, partial: NodePartial, as_node: str | None = None
    ) -> SessionState:
        """Edit a session's state as if ``as_node`` had written ``partial``.

        The update goes through the reducers and is stored as a new step.
        With ``as_node``, that node's successors become the frontier (its
        edges, routers and commands) and anything pending is dropped. Without
        it, the frontier stays; pending interrupts and their recorded answers
        and tasks stay too (the paused node re-runs on the edited state when
        resumed), while finished partials of the next step are dropped (they
        were computed from the old state). A checkpoint.

        Raises:
            SessionNotFound: no such session.
            StateError: ``partial`` is not a `NodePartial`, or holds a value
                outside the storable domain.
            ConfigError: ``as_node`` is not a node of the graph.
        """
        check_session_id(session_id)
        if not isinstance(partial, NodePartial):
            raise StateError(
                f"update_state takes a NodePartial, got {type(partial).__name__}"
            )
        if as_node is not None and as_node not in self.app.graph.nodes:
            raise ConfigError(
                f"as_node={as_node!r} is not a node of the graph; nodes:"
                f" {sorted(self.app.graph.nodes)}"
            )
        if session_id not in self._sessions and not await self._load(session_id):
            raise SessionNotFound(session_id)
        slot = self._sessions[session_id]
        async with slot.lock:
            session = slot.session
            ran = [as_node] if as_node is not None else []
            outcome = apply_barrier(
                session.state, ran, [partial], self.app.graph.reducers
            )
            if as_node is not None:
                gate = session.state.versions.gate_key()
                frontier = next_frontier(
                    self.app.graph,
                    ran,
                    outcome.frontier_commands,
                    outcome.state.snapshot(),
                    session.join_progress,
                )
                session.frontier = frontier.frontier
                session.sends = frontier.sends
                session.join_progress = frontier.join_progress
                session.versions_seen[as_node] = gate
                _drop_pending(session)
            else:
                session.pending = {}
                session.pending_step = None
                session.error = None
            session.state = outcome.state
            session.step += 1
            if session.interrupts or session.answers or session.tasks:
                session.pending_step = session.step + 1
            await self._save(session, None, ran, outcome.updated_channels)
            await self._save_pending(session)
            await self.flush()
        return await self.get_state(session_id)

    async def history(self, session_id: str) -> list[SessionState]:
        """Every stored step of a session, newest first (step 0 last).

        Each is a `SessionState` with its ``parent_step``; only the newest
        carries what is pending. Reads the store (after storing what this
        runner still has to write). A checkpoint.

        Raises:
            SessionNotFound: no such session.
        """
        check_session_id(session_id)
        if self.checkpointer is None:
            slot = self._sessions.get(session_id)
            if slot is None:
                await trio.lowlevel.checkpoint()
                raise SessionNotFound(session_id)
            return [await self.get_state(session_id)]
        await self.flush()
        states: list[SessionState] = []
        offset = 0
        while True:
            page = await self.checkpointer.query_steps(
                session_id, limit=_HISTORY_PAGE, offset=offset
            )
            for stored in page.checkpoints:
                session = stored.to_session()
                restore_pending(session, stored.pending)
                states.append(
                    _session_state(session, stored.parent_step, stored.forked_from)
                )
            offset += len(page.checkpoints)
            if not page.checkpoints or offset >= page.total:
                break
        if not states:
            raise SessionNotFound(session_id)
        return states

    async def fork(
        self, session_id: str, step: int, new_session_id: str
    ) -> SessionState:
        """Start ``new_session_id`` from step ``step`` of ``session_id``.

        Time travel: the fork has that step's state, frontier and gating, and
        resuming it (``run_until_complete``, ``App.invoke(None, ...)``) re-runs
        from there; the original session is untouched. ``forked_from`` of its
        `SessionState` is ``(session_id, step)``. A checkpoint.

        Raises:
            SessionNotFound: no such session or step.
            ConfigError: ``new_session_id`` already exists.
        """
        check_session_id(session_id)
        check_session_id(new_session_id)
        if new_session_id in self._sessions or (
            self.checkpointer is not None
            and await self.checkpointer.load_latest(new_session_id) is not None
        ):
            raise ConfigError(
                f"cannot fork into {new_session_id!r}: that session exists; pick"
                " a new id"
            )
        source = await self.get_state(session_id, step=step)
        if source.step != step:
            raise SessionNotFound(session_id)
        origin = self._sessions.get(session_id)
        if origin is not None and origin.session.step == step:
            session = attrs.evolve(
                origin.session,
                session_id=new_session_id,
                versions_seen=dict(origin.session.versions_seen),
                join_progress=dict(origin.session.join_progress),
            )
        else:
            assert self.checkpointer is not None
            page = await self.checkpointer.query_steps(
                session_id, min_step=step, max_step=step, limit=1
            )
            session = page.checkpoints[0].to_session()
            session.session_id = new_session_id
        _drop_pending(session)
        slot = _SessionSlot(session, forked_from=(session_id, step))
        self._sessions[new_session_id] = slot
        await self._save(session, None)
        await self.flush()
        bus = self.event_bus
        if (
            self._engine.lifecycle
            and bus.listening_for("diagnostic", (lifecycle.FORK,))
            and not bus.closed
        ):
            bus.emit(
                DiagnosticEvent(
                    scope=lifecycle.FORK,
                    message=f"session {new_session_id!r} forked from"
                    f" {session_id!r} at step {step}",
                    metadata=MappingProxyType(
                        {
                            "session_id": new_session_id,
                            "forked_from": {"session_id": session_id, "step": step},
                            "next": list(session.frontier),
                        }
                    ),
                )
            )
        return await self.get_state(new_session_id)

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
        self, session_id: str, state: VersionedState | None = None
    ) -> SessionInit:
        """Start ``session_id``, resume it, or start a new turn of it.

        - An unknown session starts fresh from ``state`` (``None``: an empty
          state) and saves its step-0 checkpoint.
        - A stored (or held) session given no input — ``None`` or an empty
          state — resumes where it is: a paused or failed session continues
          from its frontier, a completed one stays complete.
        - A stored session given input starts a new turn, as a chat thread
          does: the input is merged into the stored state through the
          reducers, gating and joins are reset, the frontier restarts from
          START, and the merged state is saved as a new step.

        A checkpoint; cancelling it leaves no session behind.

        Raises:
            InvalidSessionIdError: ``session_id`` breaks the session id rule.
            CheckpointError: the stored session is unreadable.
            WorkflowError: a router on START failed.
        """
        return await self._create(session_id, state, new_turns=True)

    async def _create(
        self, session_id: str, state: VersionedState | None, *, new_turns: bool
    ) -> SessionInit:
        check_session_id(session_id)
        if state is not None and not isinstance(state, VersionedState):
            raise StateError(
                f"create_session takes a VersionedState or None, got"
                f" {type(state).__name__}"
            )
        if session_id in self._sessions:
            await trio.lowlevel.checkpoint_if_cancelled()
        elif not await self._load(session_id):
            fresh = self._engine.new_session(
                session_id, state or VersionedState(), self.event_bus
            )
            self._sessions[session_id] = _SessionSlot(fresh)
            await self._save(fresh, None)
            return SessionInit(session_id=session_id, resumed=False, step=0)
        session = self._sessions[session_id].session
        session.budget_start = session.step
        if not new_turns or state is None or _is_empty(state):
            return SessionInit(session_id=session_id, resumed=True, step=session.step)
        await self._new_turn(session, state)
        return SessionInit(
            session_id=session_id, resumed=True, step=session.step, new_turn=True
        )

    async def _load(self, session_id: str) -> bool:
        """Load a stored session into this runner; whether the store had it."""
        if self.checkpointer is None:
            # Nothing to read: no scheduling pass (the run itself yields).
            await trio.lowlevel.checkpoint_if_cancelled()
            return False
        stored = await self.checkpointer.load_latest(session_id)
        if stored is None:
            return False
        self._check_graph(stored)
        session = stored.to_session()
        restore_pending(session, stored.pending)
        session.budget_start = session.step
        self._sessions[session_id] = _SessionSlot(
            session, stored.step, stored.parent_step, forked_from=stored.forked_from
        )
        return True

    async def _new_turn(self, session: Session, state: VersionedState) -> None:
        """Merge ``state``'s channels into ``session`` and restart from START."""
        update = NodePartial(
            messages=list(state.messages) or None,
            extra=dict(state.extra) or None,
            errors=list(state.errors) or None,
        )
        outcome = apply_barrier(session.state, [], [update], self.app.graph.reducers)
        session.state = outcome.state
        session.frontier = self._engine.start(session, self.event_bus)
        session.step += 1
        session.versions_seen.clear()
        session.join_progress = {}
        session.budget_start = session.step
        _drop_pending(session)
        await self._save(session, None)

    def _check_graph(self, stored: Checkpoint) -> None:
        if stored.graph_hash and stored.graph_hash != self.app.graph.graph_hash:
            logger.warning(
                "session %s was stored by a different graph (hash %s, now %s);"
                " resuming anyway",
                stored.session_id,
                stored.graph_hash,
                self.app.graph.graph_hash,
            )

    async def _complete(
        self,
        session_id: str,
        end_scope: str | None,
        *,
        create: bool = False,
        state: VersionedState | None = None,
        resume: Resume | None = None,
        interrupt_before: Collection[str] | None = None,
        interrupt_after: Collection[str] | None = None,
        on_completed: Callable[[VersionedState], None] | None = None,
    ) -> VersionedState | PausedReport:
        """`_run`, inside the run's tracing span (when tracing is on)."""
        engine = self._engine
        with engine.traced.run(session_id, self.app.graph.graph_hash) as span:
            # Steps and nodes of a run nothing records cost nothing.
            engine.tracing = engine.traced if span.recording else NO_TRACING
            result = await self._run(
                session_id,
                end_scope,
                create=create,
                state=state,
                resume=resume,
                interrupt_before=interrupt_before,
                interrupt_after=interrupt_after,
                on_completed=on_completed,
            )
            paused = isinstance(result, PausedReport)
            span.set_status("interrupted" if paused else "completed")
            return result

    async def _run(
        self,
        session_id: str,
        end_scope: str | None,
        *,
        create: bool = False,
        state: VersionedState | None = None,
        resume: Resume | None = None,
        interrupt_before: Collection[str] | None = None,
        interrupt_after: Collection[str] | None = None,
        on_completed: Callable[[VersionedState], None] | None = None,
    ) -> VersionedState | PausedReport:
        """Run a session to completion (or a pause) under one lifecycle.

        Exactly one sentinel: ``completed``, ``interrupted``, ``error`` or
        ``cancelled``. With ``create``, the session is created from ``state``
        (or resumed, or given a new turn) first, inside the same lifecycle, so
        a run cancelled while its session loads still ends with its sentinel.
        ``resume`` answers pending interrupts first. The sentinel goes out
        after the run's checkpoints are stored; ``on_completed`` is called with
        the final state just before a ``completed`` one, so the run counts as
        completed from then on whatever happens to its caller afterwards.
        """
        end = _RunEnd(self.event_bus, session_id, end_scope)
        before = (
            self.config.interrupt_before
            if interrupt_before is None
            else interrupt_before
        )
        after = (
            self.config.interrupt_after if interrupt_after is None else interrupt_after
        )
        try:
            _check_breakpoints(self.app.graph.nodes, before, after)
            if create:
                init = await self.create_session(session_id, state)
                if self._writer is not None and (init.fresh or init.new_turn):
                    # Store the new step at once: of two processes starting
                    # the same session, the loser learns it before any node
                    # runs (CheckpointConflict).
                    await self.flush()
            slot = self._slot(session_id)
            end.session = slot.session
            async with _Held(slot.lock):
                asked = slot.session.interrupts
                if resume is not None:
                    _answer(slot.session, resume)
                if self._says(slot.session, resume):
                    self._resumed(slot.session, asked)
                # The step budget is per invocation: a turn or a resume.
                slot.session.budget_start = slot.session.step
                try:
                    final = await self._engine.run_to_completion(
                        slot.session,
                        self.event_bus,
                        after_step=self._autosave,
                        interrupt_before=before,
                        interrupt_after=after,
                    )
                except Paused as paused:
                    report = self._paused(slot.session, paused)
                    self._announce(report)
                    await self._save_pending(slot.session)
                    await self.flush()
                    if on_completed is not None:
                        on_completed(report.state)  # a pause is an outcome too
                    end.interrupted(report.interrupts)
                    return report
                if self._writer is not None:
                    await self._writer.flush()
        except BaseException as exc:
            try:
                if self._writer is not None:
                    if not isinstance(exc, Exception) and end.session is not None:
                        # Cancelled mid-step: keep what its nodes finished.
                        with trio.CancelScope(shield=True):
                            await self._save_pending(end.session)
                    await self._writer.flush_after(exc)
            finally:
                end.failed(exc)
            raise
        if on_completed is not None:
            on_completed(final)
        end.completed()
        return final

    def _paused(self, session: Session, paused: Paused) -> PausedReport:
        reason: PauseReason = (
            "interrupt"
            if paused.reason == "interrupt"
            else "before_node"
            if paused.reason == "before_node"
            else "after_node"
        )
        node = paused.node
        if paused.interrupts:
            node = paused.interrupts[0].node
        return PausedReport(
            session_id=session.session_id,
            step=session.step,
            reason=reason,
            node=node,
            state=session.state,
            report=paused.outcome.report() if paused.outcome is not None else None,
            interrupts=paused.interrupts,
        )

    def _says(self, session: Session, resume: Resume | None) -> bool:
        """Whether a run of ``session`` continues an earlier attempt (and
        someone may hear about it)."""
        return (
            self._engine.lifecycle
            and not self._nested
            and self.event_bus.listening_for("diagnostic", (lifecycle.RESUME,))
            and not self.event_bus.closed
            and (
                resume is not None
                or bool(session.interrupts or session.answers or session.pending)
                or session.error is not None
                or session.breakpoint_hit is not None
            )
        )

    def _resumed(self, session: Session, asked: tuple[Interrupt, ...]) -> None:
        """``session.resume``: what this run continues from."""
        waiting = {i.id for i in session.interrupts}
        answered = [i.id for i in asked if i.id not in waiting]
        after = (
            "interrupt"
            if asked
            else "failure"
            if session.error is not None
            else "breakpoint"
            if session.breakpoint_hit is not None
            else "stop"
        )
        self.event_bus.emit(
            DiagnosticEvent(
                scope=lifecycle.RESUME,
                message=f"session {session.session_id!r} resumes at step"
                f" {session.step + 1} after {after}",
                metadata=MappingProxyType(
                    {
                        "session_id": session.session_id,
                        "step": session.step + 1,
                        "after": after,
                        "answered": answered,
                        "kept": sorted(session.pending),
                    }
                ),
            )
        )

    def _announce(self, report: PausedReport) -> None:
        """Each pending interrupt as an event, so a stream shows what is asked."""
        if self.event_bus.closed or self._nested:
            return  # a subgraph's: its parent node asks it
        for interrupt in report.interrupts:
            self.event_bus.emit(
                DiagnosticEvent(
                    scope=INTERRUPT_SCOPE,
                    message=f"node {interrupt.node!r} asks: {interrupt.payload!r:.200}",
                    metadata=MappingProxyType(
                        {
                            "id": interrupt.id,
                            "node": interrupt.node,
                            "payload": encode_value(interrupt.payload),
                            "step": report.step + 1,
                            "session_id": report.session_id,
                        }
                    ),
                )
            )

    async def _persist(self, session: Session) -> None:
        """A durable task finished: store the session's pending record now."""
        if self._writer is None:
            return
        with trio.CancelScope(shield=True):
            await self._save_pending(session)
            await self._writer.flush()

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
        and a `PausedReport` says which listed node ran. A node that calls
        ``ctx.interrupt`` pauses the session: a `PausedReport` (``"interrupt"``).

        A stepped run ends its streams like any run: the stream-end sentinel
        goes out with the step that completes the session (``completed``), a
        step that fails (``error``), is cancelled (``cancelled``) or pauses in
        a node (``interrupted``); breakpoint pauses send none. A checkpoint.

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
            # A stepped run ends like any other: one sentinel, sent with the
            # step that completes, fails, pauses in a node or is cancelled.
            end = _RunEnd(self.event_bus, session_id, STREAM_END_SCOPE)
            end.session = session
            try:
                outcome = await self._engine.step(session, self.event_bus)
                if outcome is not None:
                    await self._autosave(session, outcome)
                    done = is_complete(
                        outcome.frontier.frontier, outcome.frontier.sends
                    )
                    if done and self._writer is not None:
                        await self._writer.flush()
            except Paused as paused:
                paused_report = self._paused(session, paused)
                self._announce(paused_report)
                await self._save_pending(session)
                await self.flush()
                end.interrupted(paused_report.interrupts)
                return paused_report
            except BaseException as exc:
                try:
                    if self._writer is not None:
                        with trio.CancelScope(shield=not isinstance(exc, Exception)):
                            await self._autosave(session, None)
                        await self._writer.flush_after(exc)
                finally:
                    end.failed(exc)
                raise
            if outcome is None:
                report = self._engine.completed_report(session)
            else:
                report = outcome.report()
                if report.completed:
                    end.completed()
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

    async def run_until_complete(
        self,
        session_id: str,
        *,
        interrupt_before: Collection[str] | None = None,
        interrupt_after: Collection[str] | None = None,
    ) -> VersionedState | PausedReport:
        """Run ``session_id`` to completion (or its next pause).

        Returns the final state, or a `PausedReport` when a node interrupts or
        a breakpoint matches (``interrupt_before``/``interrupt_after``: node
        names or ``"*"``; default: the config's). Calling again moves past the
        breakpoint it stopped at. Emits the stream-end sentinel (completed,
        interrupted, error or cancelled) after the checkpoints are stored. A
        checkpoint.

        Raises:
            SessionNotFound: unknown session.
            WorkflowError: a step failed (what finished is kept as pending).
        """
        self._slot(session_id)
        return await self._complete(
            session_id,
            STREAM_END_SCOPE,
            interrupt_before=interrupt_before,
            interrupt_after=interrupt_after,
        )

    async def resume(
        self,
        session_id: str,
        value: Any = None,
        *,
        values: Mapping[str, Any] | None = None,
        interrupt_before: Collection[str] | None = None,
        interrupt_after: Collection[str] | None = None,
    ) -> VersionedState | PausedReport:
        """Answer a paused session's interrupts and run it on, like
        `run_until_complete` (to the end or the next pause).

        ``value`` answers the one pending interrupt; ``values`` answers several
        by interrupt id. With no pending interrupt (a breakpoint), the session
        just continues. Loads the session from the store when this runner does
        not hold it. A checkpoint.

        Raises:
            SessionNotFound: no such session.
            ConfigError: ``values`` names an interrupt that is not pending, or
                several are pending and only ``value`` was given.
            WorkflowError: a step failed.
        """
        check_session_id(session_id)
        if session_id not in self._sessions:
            stored = await self._load(session_id)
            if not stored:
                raise SessionNotFound(session_id)
        return await self._complete(
            session_id,
            STREAM_END_SCOPE,
            resume=Resume(value, values=values),
            interrupt_before=interrupt_before,
            interrupt_after=interrupt_after,
        )

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
        # A stored iterative session resumes as it is: its inputs come through
        # invoke_next, never as a new turn.
        init = await self._create(session_id, state, new_turns=False)
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
            _drop_pending(session)
        result = await self._complete(session_id, INVOCATION_END_SCOPE)
        return result.state if isinstance(result, PausedReport) else result

    async def finish_iterative_session(self, session_id: str) -> VersionedState:
        """End an iterative session: emit its stream-end sentinel, return its state.

        Raises:
            SessionNotFound: unknown session.
        """
        slot = self._slot(session_id)
        async with slot.lock:
            await self.flush()
            end = _RunEnd(self.event_bus, session_id, STREAM_END_SCOPE)
            end.session = slot.session
            end.completed()
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
    require_trio("open_runner()")
    if not isinstance(app, App):
        raise StateError(f"open_runner takes a compiled App, got {app!r}")
    cfg = config if config is not None else app.config
    store = checkpointer if checkpointer is not None else cfg.checkpointer
    bus = event_bus if event_bus is not None else cfg.event_bus.build()
    async with bus:
        if store is None:
            # No writer task: no nursery either (a run of one node stays cheap).
            yield AppRunner(
                app,
                checkpointer=None,
                bus=bus,
                autosave=autosave,
                config=cfg,
                nursery=None,
            )
            return
        async with open_service_nursery() as nursery:
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


def _check_breakpoints(
    nodes: Collection[str], before: Collection[str], after: Collection[str]
) -> None:
    """Refuse breakpoints on nodes the graph lacks (a typo would never pause).

    Raises:
        ConfigError: a name is neither a node of the graph nor ``"*"``.
    """
    for key, names in (("interrupt_before", before), ("interrupt_after", after)):
        unknown = sorted(n for n in names if n != "*" and n not in nodes)
        if unknown:
            raise ConfigError(
                f"{key} names nodes the graph does not have: {unknown}; its nodes"
                f" are {sorted(nodes)}"
            )
