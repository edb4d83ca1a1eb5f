"""`App`: a compiled graph plus its configuration, and the ways to run it."""

from __future__ import annotations

import math
import queue
import threading
import uuid
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Iterator,
    Sequence,
)
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

import attrs
import trio

from .._core.errors import ConfigError, InvalidNodeError, StateError
from .._core.graph import BaseGraphBuilder, Graph, Node, NodeFunction, RetryPolicy
from .._core.session import Resume, check_session_id
from .._core.state import VersionedState
from .._trio import open_service_nursery, require_trio
from ..events.sinks import ChannelSink, EventSink
from ..events.steps import StreamMode, check_modes, combine_modes, mode_types
from ..events.stream import EventStream
from ..events.types import STREAM_END_SCOPE, Event
from .config import RuntimeConfig
from .engine import Engine
from .invocation import Invocation
from .subgraph import InputMap, OutputMap, Subgraph

if TYPE_CHECKING:
    from ..events.bus import EventBus


T = TypeVar("T")


def _check_state(state: object, where: str) -> VersionedState | Resume | None:
    if state is not None and not isinstance(state, VersionedState | Resume):
        raise StateError(
            f"{where} takes a VersionedState (or Resume(...), or None), got"
            f" {type(state).__name__}; build one"
            " with VersionedState.with_user_message('...') or VersionedState.builder()"
        )
    return state


def _with_breakpoints(
    config: RuntimeConfig,
    before: Collection[str] | None,
    after: Collection[str] | None,
) -> RuntimeConfig:
    if before is None and after is None:
        return config
    return attrs.evolve(
        config,
        interrupt_before=config.interrupt_before if before is None else before,
        interrupt_after=config.interrupt_after if after is None else after,
    )


def _with_modes(
    config: RuntimeConfig, modes: object
) -> tuple[RuntimeConfig, tuple[StreamMode, ...] | None]:
    """The config whose run publishes what ``modes`` ask for, and the modes a
    stream of the run must be filtered to (``None``: it shows everything).

    ``modes=None`` streams the config's ``stream_modes``. The run publishes its
    events, what its config names and what ``modes`` name; the stream shows only
    ``modes`` (and the sentinel).
    """
    chosen = config.stream_modes if modes is None else check_modes(modes)
    published = combine_modes(("events",), config.stream_modes, chosen)
    if published != config.stream_modes:
        config = attrs.evolve(config, stream_modes=published)
    return config, None if chosen == published else chosen


def _check_config(config: object) -> RuntimeConfig | None:
    if config is not None and not isinstance(config, RuntimeConfig):
        raise ConfigError(f"config must be a RuntimeConfig, got {config!r}")
    return config


class GraphBuilder(BaseGraphBuilder):
    """Describe a workflow graph, then `compile` it into an ``App``.

    Every method but `compile` returns the builder, so calls chain::

        app = (GraphBuilder()
               .add_node("greet", greet)
               .add_edge(START, "greet")
               .add_edge("greet", END)
               .compile())
    """

    def add_node(
        self,
        name: str,
        node: NodeFunction | Node | App,
        *,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        destinations: Sequence[str] | None = None,
        gated: bool = True,
        input: InputMap | None = None,
        output: OutputMap | None = None,
    ) -> Self:
        """Register ``node`` under ``name``; see `BaseGraphBuilder.add_node`.

        ``node`` may also be a compiled `App`: a subgraph. The child graph then
        runs as this one node. By default it starts from the parent's snapshot
        (messages and extra) and what it adds or changes merges back as the
        node's partial; ``input(snapshot) -> VersionedState`` and
        ``output(child_final_state, snapshot) -> NodePartial`` map explicitly.
        See ``docs/howto-subgraphs.md``.

        Raises:
            InvalidNodeError: as for any node, or ``input``/``output`` given
                for a node that is not an `App`, or not callable.
        """
        if isinstance(node, App):
            for what, fn in (("input", input), ("output", output)):
                if fn is not None and not callable(fn):
                    raise InvalidNodeError(
                        f"node {name!r}: {what}= must be a function, got {fn!r}"
                    )
            super().add_node(
                name,
                Subgraph(node, input, output),
                timeout=timeout,
                retry=retry,
                destinations=destinations,
                gated=gated,
            )
            spec = self._nodes[name]
            self._nodes[name] = attrs.evolve(
                spec, label=f"subgraph:{node.graph.graph_hash}", subgraph=node.graph
            )
            return self
        if input is not None or output is not None:
            raise InvalidNodeError(
                f"node {name!r}: input= and output= map the state of a subgraph;"
                " they apply only when the node is a compiled App"
            )
        return super().add_node(
            name,
            node,
            timeout=timeout,
            retry=retry,
            destinations=destinations,
            gated=gated,
        )

    def compile(self, config: RuntimeConfig | None = None) -> App:
        """Validate the topology and return a runnable ``App``.

        Raises:
            GraphError: the first problem found, checked in this order: missing
                entry, unknown node, cycle of unconditional edges, unreachable
                nodes, nodes with no path to END.
            ConfigError: ``config`` is not a `RuntimeConfig`.
        """
        graph = self.build()
        return App(graph, _check_config(config) or RuntimeConfig())


class App:
    """A compiled, validated workflow. Get one from ``GraphBuilder.compile``.

    Every ``invoke*`` method runs the graph in supersteps and returns or streams the
    result; each run gets its own event bus, built from ``config.event_bus``.
    """

    def __init__(self, graph: Graph, config: RuntimeConfig) -> None:
        self._graph = graph
        self._config = config

    @property
    def graph(self) -> Graph:
        """The compiled graph: nodes, edges, topological order, exports, hash."""
        return self._graph

    @property
    def config(self) -> RuntimeConfig:
        """The default runtime configuration of this app's runs."""
        return self._config

    def engine(self, config: RuntimeConfig | None = None) -> Engine:
        """The superstep engine for ``config`` (default: the app's)."""
        return Engine(self._graph, config if config is not None else self._config)

    def _session_id(self, config: RuntimeConfig, session_id: str | None) -> str:
        if session_id is not None:
            return check_session_id(session_id)
        return config.session_id or f"run-{uuid.uuid4()}"

    async def _execute(
        self,
        state: VersionedState | Resume | None,
        bus: EventBus,
        config: RuntimeConfig,
        session_id: str,
        on_completed: Callable[[VersionedState], None] | None = None,
    ) -> VersionedState:
        """Start ``bus`` and run one session to completion on it, through a runner.

        The one path of every ``invoke*``, with or without a checkpointer. With
        one, the session resumes if it is stored (``state`` is then ignored; a
        completed session returns its stored final state) and every step is saved.
        """
        from .runner import PausedReport, open_runner

        async with open_runner(self, event_bus=bus, config=config) as runner:
            result = await runner._complete(
                session_id,
                STREAM_END_SCOPE,
                create=True,
                state=None if isinstance(state, Resume) else state,
                resume=state if isinstance(state, Resume) else None,
                on_completed=on_completed,
            )
        # A pause is not an error: the state at the pause.
        return result.state if isinstance(result, PausedReport) else result

    # ------------------------------------------------------------------ invoking

    async def invoke(
        self,
        state: VersionedState | Resume | None = None,
        *,
        session_id: str | None = None,
        config: RuntimeConfig | None = None,
        interrupt_before: Collection[str] | None = None,
        interrupt_after: Collection[str] | None = None,
    ) -> VersionedState:
        """Run the graph to completion and return the final state.

        A checkpoint. Cancelling the caller cancels the run (its sentinel says
        ``status=cancelled``).

        Args:
            state: The input. For a new session, its initial state (``None``:
                empty). For a stored session (a checkpointer and a known
                ``session_id``), input starts a new turn — merged into the stored
                state through the reducers and run from START — while ``None``
                (or an empty state) resumes what is there.
            session_id: The session to run (default: the config's, else a
                fresh ``run-<uuid>``).
            config: Overrides the app's `RuntimeConfig` for this run.

        Raises:
            WorkflowError: a node failed; ``error_event`` says which and why.
            StepLimitExceeded: the run did not finish within ``max_steps``.
        """
        require_trio("App.invoke()")
        state = _check_state(state, "invoke()")
        cfg = _with_breakpoints(
            _check_config(config) or self._config, interrupt_before, interrupt_after
        )
        sid = self._session_id(cfg, session_id)
        return await self._execute(state, cfg.event_bus.build(), cfg, sid)

    async def invoke_with_sinks(
        self,
        state: VersionedState | Resume | None,
        sinks: Iterable[EventSink],
        *,
        session_id: str | None = None,
        config: RuntimeConfig | None = None,
        interrupt_before: Collection[str] | None = None,
        interrupt_after: Collection[str] | None = None,
    ) -> VersionedState:
        """Run to completion; every sink sees every event, in order.

        The configured sinks and ``sinks`` are all drained, flushed and closed
        before this returns (or raises). A checkpoint.

        Raises:
            WorkflowError: a node failed (the sinks still saw every event).
        """
        require_trio("App.invoke_with_sinks()")
        state = _check_state(state, "invoke_with_sinks()")
        cfg = _with_breakpoints(
            _check_config(config) or self._config, interrupt_before, interrupt_after
        )
        sink_list = list(sinks)
        for sink in sink_list:
            if not callable(getattr(sink, "handle", None)):
                raise StateError(
                    f"{sink!r} is not an event sink: it needs 'async def handle(event)'"
                )
        sid = self._session_id(cfg, session_id)
        return await self._execute(state, cfg.event_bus.build(sink_list), cfg, sid)

    async def invoke_with_channel(
        self,
        state: VersionedState | Resume | None = None,
        *,
        session_id: str | None = None,
        config: RuntimeConfig | None = None,
        interrupt_before: Collection[str] | None = None,
        interrupt_after: Collection[str] | None = None,
    ) -> tuple[VersionedState, trio.MemoryReceiveChannel[Event]]:
        """Run to completion; return the final state and a channel of every event.

        The channel holds every event of the run, ending with the stream-end
        sentinel, then reports ``EndOfChannel``. Nothing is dropped (it is
        unbounded, so it suits runs whose events fit in memory). A checkpoint.

        Raises:
            WorkflowError: a node failed.
        """
        send, receive = trio.open_memory_channel[Event](math.inf)
        final = await self.invoke_with_sinks(
            state,
            [ChannelSink(send)],
            session_id=session_id,
            config=config,
            interrupt_before=interrupt_before,
            interrupt_after=interrupt_after,
        )
        return final, receive

    async def start_streaming(
        self,
        nursery: trio.Nursery,
        state: VersionedState | Resume | None = None,
        *,
        session_id: str | None = None,
        config: RuntimeConfig | None = None,
        interrupt_before: Collection[str] | None = None,
        interrupt_after: Collection[str] | None = None,
        modes: Iterable[StreamMode] | StreamMode | None = None,
    ) -> tuple[Invocation, EventStream]:
        """Start a run as a task of ``nursery``; return its handle and event stream.

        The stream is subscribed before the run starts, so it sees every event,
        and ends right after the run's stream-end sentinel. The run's failure is
        kept for `Invocation.join`; it never crashes ``nursery``. A checkpoint.

        Args:
            modes: What the stream shows, any of ``"events"`` (the run's
                events), ``"updates"`` (a `StepUpdates` after each step) and
                ``"values"`` (a `StepValues` after each step); ``None``: the
                config's ``stream_modes`` (by default ``("events",)``).

        Raises:
            ConfigError: an unknown mode (the message lists the valid ones).
        """
        require_trio("App.start_streaming()")
        state = _check_state(state, "start_streaming()")
        cfg = _with_breakpoints(
            _check_config(config) or self._config, interrupt_before, interrupt_after
        )
        cfg, shown = _with_modes(cfg, modes)
        bus = cfg.event_bus.build()
        events = bus.subscribe(
            stop_at_stream_end=True,
            types=None if shown is None else mode_types(shown),
        )
        invocation = Invocation(self._session_id(cfg, session_id))
        await nursery.start(self._serve_invocation, invocation, bus, state, cfg)
        return invocation, events

    async def _serve_invocation(
        self,
        invocation: Invocation,
        bus: EventBus,
        state: VersionedState,
        config: RuntimeConfig,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        task_status.started()
        try:
            with invocation.cancel_scope:
                await self._execute(
                    state,
                    bus,
                    config,
                    session_id=invocation.session_id,
                    on_completed=invocation._record_result,
                )
        except Exception as exc:
            # A run whose sentinel said completed stays completed, even if
            # closing its runner failed afterwards.
            if not invocation.completed_early:
                invocation._set_error(exc)
        finally:
            invocation._finish()

    @asynccontextmanager
    async def invoke_streaming(
        self,
        state: VersionedState | Resume | None = None,
        *,
        session_id: str | None = None,
        config: RuntimeConfig | None = None,
        interrupt_before: Collection[str] | None = None,
        interrupt_after: Collection[str] | None = None,
        modes: Iterable[StreamMode] | StreamMode | None = None,
    ) -> AsyncIterator[tuple[Invocation, EventStream]]:
        """``async with app.invoke_streaming(state) as (invocation, events):``

        The run happens while the block is open. Leaving the block cancels the run
        if it is still going and closes the stream; no task outlives the block.

        Args:
            modes: What the stream shows: ``"events"`` (every event of the run,
                as emitted), ``"updates"`` (after each step, a `StepUpdates`
                holding every node's partial by node name) and ``"values"``
                (after each step, a `StepValues` holding the whole state), in
                any combination. A step's items follow its events and precede
                the next step's; the stream still ends with the one stream-end
                sentinel. ``None``: the config's ``stream_modes`` (by default
                ``("events",)``). Items are built only when a mode asks.

        Raises:
            ConfigError: an unknown mode (the message lists the valid ones).
        """
        require_trio("App.invoke_streaming()")
        if modes is not None:
            check_modes(modes)  # before anything starts
        async with open_service_nursery() as nursery:
            invocation, events = await self.start_streaming(
                nursery,
                state,
                session_id=session_id,
                config=config,
                interrupt_before=interrupt_before,
                interrupt_after=interrupt_after,
                modes=modes,
            )
            try:
                with events:
                    yield invocation, events
            finally:
                invocation.cancel("invoke_streaming block exited")

    # ------------------------------------------------------------ blocking twins

    def invoke_sync(
        self,
        state: VersionedState | Resume | None = None,
        *,
        session_id: str | None = None,
        config: RuntimeConfig | None = None,
        interrupt_before: Collection[str] | None = None,
        interrupt_after: Collection[str] | None = None,
    ) -> VersionedState:
        """Blocking `invoke` for plain scripts and notebooks.

        Runs a fresh trio loop in a worker thread for the duration of the call, so
        it works even where an asyncio loop is already running. Ctrl-C cancels the
        run and re-raises ``KeyboardInterrupt``.
        """
        state = _check_state(state, "invoke_sync()")
        cfg = _with_breakpoints(
            _check_config(config) or self._config, interrupt_before, interrupt_after
        )
        return _run_in_thread(
            lambda: self.invoke(state, session_id=session_id, config=cfg)
        )

    def stream_sync(
        self,
        state: VersionedState | Resume | None = None,
        *,
        session_id: str | None = None,
        config: RuntimeConfig | None = None,
        interrupt_before: Collection[str] | None = None,
        interrupt_after: Collection[str] | None = None,
        modes: Iterable[StreamMode] | StreamMode | None = None,
    ) -> Iterator[Event]:
        """A blocking iterator over the run's events, ending after the sentinel.

        The run happens in a worker thread with its own trio loop; closing the
        iterator early (``break``) cancels it. The run's failure is raised from the
        iterator after the sentinel was yielded. ``modes`` are those of
        `invoke_streaming`.

        Raises:
            ConfigError: an unknown mode (the message lists the valid ones).
        """
        state = _check_state(state, "stream_sync()")
        cfg = _with_breakpoints(
            _check_config(config) or self._config, interrupt_before, interrupt_after
        )
        chosen = None if modes is None else check_modes(modes)
        return _stream_in_thread(self, state, session_id, cfg, chosen)


_DONE = object()


def _run_in_thread(make: Callable[[], Awaitable[T]]) -> T:
    """Run ``trio.run(make)`` in a worker thread; Ctrl-C cancels it."""
    outcome: dict[str, Any] = {}
    token_ready = threading.Event()
    holder: dict[str, Any] = {}

    async def main() -> None:
        holder["token"] = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as scope:
            holder["scope"] = scope
            token_ready.set()
            outcome["value"] = await make()

    def target() -> None:
        try:
            trio.run(main)
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            token_ready.set()

    thread = threading.Thread(target=target, name="weavegraph-invoke-sync")
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.05)
    except KeyboardInterrupt:
        token_ready.wait()
        if "token" in holder:
            with suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(
                    holder["scope"].cancel, trio_token=holder["token"]
                )
        thread.join()
        raise
    if "error" in outcome:
        raise outcome["error"]
    if "value" not in outcome:
        raise KeyboardInterrupt
    return cast(T, outcome["value"])


def _stream_in_thread(
    app: App,
    state: VersionedState | Resume | None,
    session_id: str | None,
    config: RuntimeConfig | None,
    modes: tuple[StreamMode, ...] | None = None,
) -> Iterator[Event]:
    items: queue.Queue[Any] = queue.Queue(maxsize=1024)
    holder: dict[str, Any] = {}
    started = threading.Event()

    async def main() -> None:
        holder["token"] = trio.lowlevel.current_trio_token()
        async with app.invoke_streaming(
            state, session_id=session_id, config=config, modes=modes
        ) as (invocation, events):
            holder["invocation"] = invocation
            started.set()
            async for event in events:
                await trio.to_thread.run_sync(items.put, event, abandon_on_cancel=True)
            await invocation.join()

    def target() -> None:
        try:
            trio.run(main)
            items.put((_DONE, None))
        except BaseException as exc:
            items.put((_DONE, exc))
        finally:
            started.set()

    def generate() -> Iterator[Event]:
        thread = threading.Thread(target=target, name="weavegraph-stream-sync")
        thread.start()
        try:
            while True:
                item = items.get()
                if isinstance(item, tuple) and item and item[0] is _DONE:
                    if item[1] is not None:
                        raise item[1]
                    return
                yield item
        finally:
            if thread.is_alive():
                started.wait()
                invocation = holder.get("invocation")
                if invocation is not None:
                    with suppress(trio.RunFinishedError):
                        trio.from_thread.run_sync(
                            invocation.cancel, trio_token=holder["token"]
                        )
                # Drain so a producer blocked on a full queue can finish.
                while thread.is_alive():
                    with suppress(queue.Empty):
                        items.get(timeout=0.05)
                thread.join()

    return generate()
