"""An ASGI application that runs workflows and streams them as Server-Sent Events.

Routes:

* ``POST /runs`` — start a run from a JSON body and stream its events;
* ``GET /runs/{session_id}/events`` — attach to a run (live, recently finished, or
  stored), resuming after ``Last-Event-ID``;
* ``GET /runs/{session_id}/state`` — the session's state and pending interrupts
  (``?step=N``: a stored step);
* ``POST /runs/{session_id}/resume`` — answer its interrupts (or pass a
  breakpoint) and stream the continuation, a run like any other;
* ``PATCH /runs/{session_id}/state`` — edit the state (stored as a new step);
* ``POST /runs/{session_id}/fork`` — a new session from a stored step;
* ``GET /runs/{session_id}/history`` — its stored steps, newest first, paged;
* ``GET /runs`` — the runs this server knows;
* ``GET /graph`` — nodes, edges and a Mermaid diagram;
* ``GET /`` — the live run viewer page (and its files under ``/static/``).

The streaming routes take ``?modes=events,updates,values`` (default:
``events``): the run's events, each step's partials by node (`StepUpdates`),
the state after each step (`StepValues`). Every run the server starts
publishes lifecycle events and updates; values only when the request that
starts it asks for them.

A run lives as long as somebody watches it: when its last client disconnects it
is cancelled (its nodes see ``trio.Cancelled`` at once). Runs execute in the
request's own nursery, so the app needs no background task and works under any
trio ASGI server (hypercorn's trio worker in particular).

Every limit is per app: request bodies are bounded in size and in time,
concurrent requests and runs are capped (503 beyond), event logs are bounded in
events and bytes, replays of stored sessions read the store a page at a time
with a bound on how many do at once.
"""

from __future__ import annotations

import inspect
import logging
import math
import re
import uuid
from collections import OrderedDict
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    MutableMapping,
)
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, unquote

import attrs
import trio

from .._codec import dumps_bytes, state_to_json
from .._core.errors import (
    CheckpointConflict,
    CheckpointError,
    ConfigError,
    InvalidSessionIdError,
    RunCancelledError,
    SessionNotFound,
    StateError,
    UsageError,
    WeavegraphError,
    WorkflowError,
    describe_exception,
)
from .._core.frontier import is_complete
from .._core.graph import END, START, Graph, display
from .._core.session import Resume, check_session_id
from .._core.state import Message, VersionedState
from .._runtime.app import App
from .._runtime.invocation import Invocation
from .._runtime.runner import AppRunner, SessionState, open_runner
from ..checkpoint.record import Checkpoint, Checkpointer
from ..events.bus import EventBusConfig
from ..events.steps import STREAM_MODES, StreamMode, combine_modes, mode_types
from ..events.stream import EventStream
from ..events.types import DiagnosticEvent, Event, stream_end_event
from . import _review as review
from . import _security as security
from ._log import RunLog
from ._security import (
    Action,
    AuthorizationError,
    Authorize,
    Headers,
    HTTPError,
    Request,
)

logger = logging.getLogger("weavegraph.serve")

Scope = MutableMapping[str, Any]
ASGIMessage = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[ASGIMessage]]
Send = Callable[[ASGIMessage], Awaitable[None]]

SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"content-security-policy", security.API_CSP),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
JSON_TYPE = (b"content-type", b"application/json")
CLOSE = (b"connection", b"close")
STATE_WAIT = 5.0
"""Seconds ``GET /runs/{id}/state`` waits for a run whose sentinel is out."""
SILENT_END = 1.0
"""Seconds the app waits for a finished run's stream to end before ending it."""
REPLAY_PAGE = 100
"""Stored steps read per call when replaying a session."""
MAX_EVENT_ID_DIGITS = 18
STATIC = {
    "viewer.js": b"text/javascript; charset=utf-8",
    "viewer.css": b"text/css; charset=utf-8",
}
SESSION_ROUTES: dict[str, tuple[str, ...]] = {
    "events": ("GET",),
    "state": ("GET", "PATCH"),
    "history": ("GET",),
    "resume": ("POST",),
    "fork": ("POST",),
}
"""What ``/runs/{session_id}/<route>`` serves, and with which methods."""
TRUNCATED_SCOPE = "serve.log_truncated"
"""Scope of the diagnostic frame that tells a client memory limits cost it events."""
RUN_MODES: tuple[StreamMode, ...] = ("events", "updates")
"""What every run the server starts publishes (``values`` too when asked)."""

_DIGITS = re.compile(f"[0-9]{{1,{MAX_EVENT_ID_DIGITS}}}")


def encode_sse(event: Event, seq: int | None = None) -> bytes:
    """One SSE frame: ``id:`` (when given), ``event:`` the type, ``data:`` JSON."""
    head = f"id: {seq}\n" if seq is not None else ""
    return (
        f"{head}event: {event.type}\ndata: ".encode()
        + dumps_bytes(event.to_json())
        + b"\n\n"
    )


@attrs.define(eq=False)
class LiveRun:
    """A run this server started, with its event log and its watchers.

    ``status`` is ``"running"`` until the stream-end event is logged, then the
    status that event carries; ``done`` is set once the log is closed.
    """

    session_id: str
    graph: str
    log: RunLog
    invocation: Invocation | None = None
    clients: int = 0
    done: trio.Event = attrs.field(factory=trio.Event)
    status: str = "running"
    step: int = 0
    outcome: tuple[str, str | None] | None = None
    interrupts: list[dict[str, Any]] = attrs.field(factory=list)
    modes: tuple[StreamMode, ...] = RUN_MODES
    end_seq: int = 0
    """The stream-end event's sequence number (0 until it is logged)."""


def _positive(name: str, value: object, *, whole: bool = False) -> None:
    number = isinstance(value, int) or (not whole and isinstance(value, float))
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not number
        or not value > 0
        or not math.isfinite(value)
    ):
        kind = "an int" if whole else "a number"
        raise ConfigError(f"sse_app: {name} must be {kind} > 0, got {value!r}")


def default_max_connections() -> int:
    """Half the process's file descriptors (soft limit), between 16 and 1024."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):  # pragma: no cover - not on Unix
        return 512
    if soft == resource.RLIM_INFINITY:
        return 1024
    return max(16, min(1024, (soft - 32) // 2))


def _topology(graph: Graph) -> dict[str, Any]:
    """Nodes, edges and routers of ``graph``; ``subgraphs`` holds the same for
    each subgraph node's child graph (by node name, recursively)."""
    return {
        "nodes": [display(n) for n in graph.topological_order()],
        "edges": [[display(a), display(b)] for a, b in graph.edge_list()],
        "conditional": [
            {
                "source": display(c.source),
                "targets": [display(t) for t in c.declared_targets() or ()],
            }
            for c in graph.conditionals
        ],
        "subgraphs": {
            name: _topology(spec.subgraph)
            for name, spec in sorted(graph.nodes.items())
            if spec.subgraph is not None
        },
    }


class SSEApp:
    """The ASGI application returned by `sse_app` (see it for the options).

    Attributes:
        apps: The served `App` objects by name.
        runs: The runs this server holds, live and recently finished, oldest
            first.
        closing: Whether a shutdown began (new requests get 503).
    """

    def __init__(
        self,
        apps: Mapping[str, App],
        *,
        checkpointer: Checkpointer | None = None,
        max_body: int = 1 << 20,
        body_timeout: float = 10.0,
        keepalive: float = 15.0,
        log_capacity: int = 10_000,
        max_log_bytes: int = 8 << 20,
        keep_finished: int = 100,
        max_finished_bytes: int = 64 << 20,
        grace: float = 0.0,
        max_connections: int | None = None,
        max_runs: int = 64,
        max_replays: int = 2,
        authorize: Authorize | None = None,
        allowed_hosts: Iterable[str] | None = None,
        cors_origins: Iterable[str] | None = None,
        client_roles: Iterable[str] | None = ("user", "assistant"),
    ) -> None:
        if not apps:
            raise ConfigError("sse_app needs at least one App to serve")
        for name, app in apps.items():
            if not isinstance(app, App):
                raise ConfigError(f"sse_app: {name!r} is not a compiled App: {app!r}")
        for name, value in (
            ("max_body", max_body),
            ("log_capacity", log_capacity),
            ("max_log_bytes", max_log_bytes),
            ("max_finished_bytes", max_finished_bytes),
            ("max_runs", max_runs),
            ("max_replays", max_replays),
        ):
            _positive(name, value, whole=True)
        for name, number in (("body_timeout", body_timeout), ("keepalive", keepalive)):
            _positive(name, number)
        if isinstance(keep_finished, bool) or not isinstance(keep_finished, int):
            raise ConfigError(
                f"sse_app: keep_finished must be an int, got {keep_finished!r}"
            )
        if keep_finished < 0:
            raise ConfigError(
                f"sse_app: keep_finished must be >= 0, got {keep_finished}"
            )
        if not isinstance(grace, int | float) or not grace >= 0:
            raise ConfigError(f"sse_app: grace must be a number >= 0, got {grace!r}")
        if max_connections is None:
            max_connections = default_max_connections()
        _positive("max_connections", max_connections, whole=True)
        if authorize is not None and not callable(authorize):
            raise ConfigError(f"sse_app: authorize must be callable, got {authorize!r}")
        if isinstance(client_roles, str):
            raise ConfigError(
                "sse_app: client_roles is a list of roles, got the string"
                f" {client_roles!r}"
            )
        self.apps = dict(apps)
        self.default = next(iter(self.apps))
        self.checkpointer = checkpointer
        self.max_body = max_body
        self.body_timeout = float(body_timeout)
        self.keepalive = keepalive
        self.log_capacity = log_capacity
        self.max_log_bytes = max_log_bytes
        self.keep_finished = keep_finished
        self.max_finished_bytes = max_finished_bytes
        self.grace = grace
        self.max_connections = max_connections
        self.max_runs = max_runs
        self.max_replays = max_replays
        self.authorize = authorize
        self.allowed_hosts = security.check_hosts(allowed_hosts)
        self.cors_origins = security.check_origins(cors_origins)
        self.client_roles = None if client_roles is None else frozenset(client_roles)
        self.runs: OrderedDict[str, LiveRun] = OrderedDict()
        self.closing = False
        self._active = 0
        self._quiet = trio.lowlevel.ParkingLot()
        self._replay_reads = trio.CapacityLimiter(max_replays)
        self.replay_page = REPLAY_PAGE
        self._replays: set[trio.CancelScope] = set()

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            raise UsageError(f"weavegraph's SSE app does not serve {scope['type']}")
        if self._active >= self.max_connections:
            await _json(
                send,
                503,
                {"error": f"the server is busy ({self.max_connections} requests)"},
                [*security.SECURITY_HEADERS, (b"retry-after", b"1"), CLOSE],
            )
            return
        self._active += 1
        started = False
        extra: Headers = list(security.SECURITY_HEADERS)

        async def reply(message: ASGIMessage) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message["headers"], *extra]}
            await send(message)

        try:
            why = security.host_allowed(scope, self.allowed_hosts)
            if why is not None:
                raise HTTPError(421, why)
            extra += security.cors_headers(scope, self.cors_origins)
            if self.closing:
                raise HTTPError(503, "the server is shutting down", [CLOSE])
            await self._route(scope, receive, reply)
        except HTTPError as exc:
            if started:  # pragma: no cover - every refusal comes before the answer
                logger.warning("refused after answering: %s", exc)
                return
            await _json(reply, exc.status, {"error": str(exc)}, exc.headers)
        finally:
            self._active -= 1
            if self._active == 0:
                self._quiet.unpark_all()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self._shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _shutdown(self) -> None:
        """Refuse new requests; cancel every live run and stored replay."""
        self.closing = True
        for run in list(self.runs.values()):
            if run.invocation is not None and not run.invocation.done:
                run.invocation.cancel("server shutting down")
        for replay in list(self._replays):
            replay.cancel("server shutting down")

    async def aclose(self) -> None:
        """Shut down gracefully: every open stream ends with its sentinel, then closes.

        New requests are answered 503 from now on. Live runs are cancelled, so
        their streams end with ``status=cancelled``; replays of stored sessions
        end at once with their sentinel. Returns when no request is in flight
        (bound it with ``trio.move_on_after``: a client that stopped reading
        holds its request). A checkpoint; cancelling it only stops the wait.
        Call it *before* the server closes connections (`serve_sse` does, on
        its shutdown trigger).
        """
        self._shutdown()
        while self._active > 0:
            await self._quiet.park()
        await trio.lowlevel.checkpoint()

    @property
    def active_requests(self) -> int:
        """Requests being served right now (open streams included)."""
        return self._active

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        parts = _segments(scope)
        if method == "OPTIONS":
            await _body(send, 204, security.preflight(scope, self.cors_origins), b"")
            return
        request = Request.from_scope(scope)
        if not parts:
            _allow(method, "GET")
            headers = [(b"content-type", b"text/html; charset=utf-8")]
            await _body(
                send, 200, [*headers, *security.PAGE_HEADERS], _file("viewer.html")
            )
        elif len(parts) == 2 and parts[0] == "static" and parts[1] in STATIC:
            _allow(method, "GET")
            headers = [(b"content-type", STATIC[parts[1]])]
            await _body(send, 200, [*headers, *security.PAGE_HEADERS], _file(parts[1]))
        elif parts == ["graph"]:
            _allow(method, "GET")
            name = _query(scope).get("graph")
            await self._authorize(attrs.evolve(request, graph=name), "read")
            await _json(send, 200, self._graph(name))
        elif parts == ["runs"]:
            if method == "POST":
                await self._post_run(request, scope, receive, send)
            else:
                _allow(method, "GET", "POST")
                await self._authorize(request, "list")
                await _json(send, 200, {"runs": self._list_runs()})
        elif len(parts) == 3 and parts[0] == "runs" and parts[2] in SESSION_ROUTES:
            await self._session_route(request, scope, receive, send, parts)
        else:
            raise HTTPError(404, f"no route for {method} {scope['path']}")

    async def _session_route(
        self,
        request: Request,
        scope: Scope,
        receive: Receive,
        send: Send,
        parts: list[str],
    ) -> None:
        """``/runs/{session_id}/...``: events, state, resume, fork, history."""
        method = scope["method"]
        route = parts[2]
        _allow(method, *SESSION_ROUTES[route])
        session_id = _session_id(parts[1])
        request = attrs.evolve(request, session_id=session_id)
        query = _query(scope)
        if route == "events":
            last = _last_event_id(scope)
            modes = review.modes_from_query(query)
            await self._authorize(request, "read")
            await self._attach(receive, send, session_id, last, modes)
        elif route == "state" and method == "GET":
            step = review.step_from_query(query)
            await self._authorize(request, "read")
            await _json(send, 200, await self._session_state(session_id, step, query))
        elif route == "history":
            limit, offset, states = review.page_from_query(query)
            await self._authorize(request, "read")
            answer = await self._history(session_id, query, limit, offset, states)
            await _json(send, 200, answer)
        else:
            what = f"{method} /runs/{{id}}/{route}"
            if not security.is_json(scope):
                raise HTTPError(
                    415,
                    f"{what} takes a JSON body: send Content-Type: application/json",
                )
            data = review.json_object(await self._read_body(scope, receive), what)
            if route == "resume":
                modes = review.modes_from_query(query)
                await self._post_resume(request, receive, send, session_id, data, modes)
            elif route == "fork":
                status, view = await self._fork(request, session_id, data)
                location = f"/runs/{view['session_id']}/state".encode()
                await _json(send, status, view, [(b"location", location)])
            else:
                await _json(send, 200, await self._update(request, session_id, data))

    async def _authorize(self, request: Request, action: Action) -> None:
        if self.authorize is None:
            return
        verdict: object = self.authorize(request, action)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        if verdict is True:
            return
        if verdict is not False:
            logger.warning(
                "authorize returned %r (not True or False) for %s %s: refused",
                verdict,
                action,
                request.path,
            )
        raise AuthorizationError(f"not allowed: {action}", status=403)

    # ----------------------------------------------------------------- routes

    def _app(self, name: object) -> tuple[str, App]:
        if name is None:
            return self.default, self.apps[self.default]
        if not isinstance(name, str) or name not in self.apps:
            raise HTTPError(
                404, f"unknown graph {name!r}; this server runs {sorted(self.apps)}"
            )
        return name, self.apps[name]

    def _graph(self, name: object) -> dict[str, Any]:
        graph_name, app = self._app(name)
        graph = app.graph
        return {
            "graph": graph_name,
            "graphs": sorted(self.apps),
            **_topology(graph),
            "mermaid": graph.to_mermaid(),
            "graph_hash": graph.graph_hash,
        }

    def _list_runs(self) -> list[dict[str, Any]]:
        return [
            {
                "session_id": run.session_id,
                "graph": run.graph,
                "status": run.status,
                "events": run.log.last,
                "clients": run.clients,
                "modes": list(run.modes),
            }
            for run in self.runs.values()
        ]

    def _live_runs(self) -> int:
        return sum(not run.done.is_set() for run in self.runs.values())

    async def _post_run(
        self, request: Request, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if not security.is_json(scope):
            raise HTTPError(
                415, "POST /runs takes a JSON body: send Content-Type: application/json"
            )
        modes = review.modes_from_query(_query(scope))
        body = await self._read_body(scope, receive)
        graph_name, app, state, named, stops = self._parse_run(body)
        session_id = named or f"run-{uuid.uuid4()}"
        if self.authorize is not None:
            action: Action = (
                "resume" if named is not None and await self._exists(named) else "start"
            )
            await self._authorize(
                attrs.evolve(request, session_id=named, graph=graph_name), action
            )
        await self._stream_run(
            receive, send, session_id, graph_name, app, state, stops, modes
        )

    async def _stream_run(
        self,
        receive: Receive,
        send: Send,
        session_id: str,
        graph_name: str,
        app: App,
        run_input: VersionedState | Resume,
        stops: Mapping[str, tuple[str, ...]],
        modes: tuple[StreamMode, ...],
    ) -> None:
        """Start a run of ``session_id`` and stream it to this client.

        The run is held in `runs` (other clients attach with ``GET
        /runs/{id}/events``) and lives as long as somebody watches it. It
        publishes lifecycle events and ``updates`` (the viewer draws them),
        ``values`` only when ``modes`` ask; this client sees ``modes``.
        """
        self._not_running(session_id)
        if self._live_runs() >= self.max_runs:
            raise HTTPError(
                503,
                f"the server is running {self.max_runs} runs, its limit; try again",
                [(b"retry-after", b"1")],
            )
        config = attrs.evolve(
            app.config,
            session_id=session_id,
            checkpointer=self._store(app),
            event_bus=EventBusConfig(
                capacity=app.config.event_bus.capacity,
                sinks=app.config.event_bus.sinks,
                overflow="block",  # the log must see everything
            ),
            interrupt_before=stops.get("interrupt_before", app.config.interrupt_before),
            interrupt_after=stops.get("interrupt_after", app.config.interrupt_after),
            lifecycle_events=True,
            stream_modes=combine_modes(RUN_MODES, app.config.stream_modes, modes),
        )
        run = LiveRun(
            session_id=session_id,
            graph=graph_name,
            log=RunLog(self.log_capacity, encode_sse, self.max_log_bytes),
            modes=config.stream_modes,
        )
        self._remember(run)
        try:
            await send(
                {"type": "http.response.start", "status": 200, "headers": SSE_HEADERS}
            )
            async with trio.open_nursery() as nursery:
                try:
                    invocation, events = await app.start_streaming(
                        nursery, run_input, config=config
                    )
                except Exception as exc:
                    # The run could not start: its stream still ends with a
                    # sentinel, saying why.
                    logger.exception("run %s could not start", session_id)
                    run.outcome = ("error", describe_exception(exc))
                    self._end(run)
                else:
                    run.invocation = invocation
                    if self.closing:  # shutdown began while the run was starting
                        invocation.cancel("server shutting down")
                    nursery.start_soon(self._pump, run, events)
                await self._serve_client(run, receive, send, 1, modes)
        finally:
            if not run.done.is_set():  # the run never got going
                self._end(run)

    def _not_running(self, session_id: str) -> None:
        current = self.runs.get(session_id)
        if current is not None and not current.done.is_set():
            raise HTTPError(409, f"session {session_id!r} is already running")

    def _store(self, app: App) -> Checkpointer | None:
        return self.checkpointer or app.config.checkpointer

    def _app_of(self, session_id: str, name: object) -> tuple[str, App]:
        """The graph of ``session_id``: its run's here, else ``name`` or the default."""
        run = self.runs.get(session_id)
        if name is None and run is not None and run.graph in self.apps:
            return run.graph, self.apps[run.graph]
        return self._app(name)

    @asynccontextmanager
    async def _runner(self, app: App, session_id: str) -> AsyncIterator[AppRunner]:
        """A runner over the store, for one request; runtime errors become 4xx.

        Its event bus has no sinks: reading or editing a session is not a run.
        """
        store = self._store(app)
        if store is None:
            if session_id in self.runs:
                raise HTTPError(
                    409,
                    f"session {session_id!r} was not stored: this server has no"
                    " checkpointer (give sse_app one to resume, edit, fork or read"
                    " past steps)",
                )
            raise HTTPError(404, f"unknown session {session_id!r}")
        config = attrs.evolve(
            app.config, checkpointer=store, event_bus=EventBusConfig()
        )
        try:
            async with open_runner(app, checkpointer=store, config=config) as runner:
                yield runner
        except HTTPError:
            raise
        except SessionNotFound as exc:
            raise HTTPError(404, _unknown(exc, session_id)) from None
        except CheckpointConflict as exc:
            raise HTTPError(
                409, f"session {session_id!r} changed meanwhile: {exc}"
            ) from None
        except CheckpointError:
            raise  # the store failed: a server fault, not the request's
        except WeavegraphError as exc:
            raise HTTPError(400, str(exc)) from None

    async def _stored_view(self, app: App, session_id: str) -> SessionState:
        async with self._runner(app, session_id) as runner:
            return await runner.get_state(session_id)

    async def _post_resume(
        self,
        request: Request,
        receive: Receive,
        send: Send,
        session_id: str,
        data: Mapping[str, Any],
        modes: tuple[StreamMode, ...],
    ) -> None:
        review.check_keys(
            data,
            ("value", "values", "graph", "interrupt_before", "interrupt_after"),
            "a resume request",
        )
        graph_name, app = self._app_of(session_id, data.get("graph"))
        resume = review.resume_from_json(data)
        stops = review.breakpoints(data, app.graph.nodes)
        await self._authorize(attrs.evolve(request, graph=graph_name), "resume")
        self._not_running(session_id)
        view = await self._stored_view(app, session_id)
        review.check_resume(
            resume, session_id, view.interrupts, completed=view.completed
        )
        await self._stream_run(
            receive, send, session_id, graph_name, app, resume, stops, modes
        )

    async def _update(
        self, request: Request, session_id: str, data: Mapping[str, Any]
    ) -> dict[str, Any]:
        graph_name, app = self._app_of(session_id, None)
        partial, as_node = review.update_from_json(
            data, app.graph.nodes, self.client_roles
        )
        await self._authorize(attrs.evolve(request, graph=graph_name), "resume")
        self._not_running(session_id)
        async with self._runner(app, session_id) as runner:
            view = await runner.update_state(session_id, partial, as_node=as_node)
        return review.session_to_json(view)

    async def _fork(
        self, request: Request, session_id: str, data: Mapping[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        step, new_id = review.fork_from_json(data)
        graph_name, app = self._app_of(session_id, None)
        await self._authorize(attrs.evolve(request, graph=graph_name), "resume")
        if new_id in self.runs:
            raise HTTPError(409, f"session {new_id!r} exists: fork to a new id")
        async with self._runner(app, session_id) as runner:
            store = runner.checkpointer
            assert store is not None
            if await store.load_latest(new_id) is not None:
                raise HTTPError(409, f"session {new_id!r} exists: fork to a new id")
            view = await runner.fork(session_id, step, new_id)
        return 201, review.session_to_json(view)

    async def _history(
        self,
        session_id: str,
        query: Mapping[str, str],
        limit: int,
        offset: int,
        states: bool,
    ) -> dict[str, Any]:
        """One page of the session's stored steps, newest first.

        Only the page is read from the store (one query, under the replay
        bound), not the whole history: a session may hold many steps.
        """
        _, app = self._app_of(session_id, query.get("graph"))
        async with self._runner(app, session_id) as runner:
            store = runner.checkpointer
            assert store is not None
            async with self._replay_reads:
                page = await store.query_steps(session_id, limit=limit, offset=offset)
            if page.total == 0:
                raise HTTPError(404, f"unknown session {session_id!r}")
            views: list[SessionState] = []
            for cp in page.checkpoints:
                if cp.pending is not None:
                    # Only the newest step carries what is pending: the runner
                    # reads it (interrupts, finished partials, the error).
                    views.append(await runner.get_state(session_id, step=cp.step))
                else:
                    views.append(_stored_view(cp))
        return {
            "session_id": session_id,
            "total": page.total,
            "offset": offset,
            "limit": limit,
            "has_next": page.has_next,
            "steps": [review.history_entry(v, with_state=states) for v in views],
        }

    async def _exists(self, session_id: str) -> bool:
        """Whether the session is held here or stored (for ``resume``)."""
        if session_id in self.runs:
            return True
        if self.checkpointer is None:
            return False
        return await self.checkpointer.load_latest(session_id) is not None

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        declared = security.header(scope, b"content-length")
        if (
            declared is not None
            and declared.isdigit()
            and int(declared) > self.max_body
        ):
            raise HTTPError(
                413, f"request body larger than {self.max_body} bytes", [CLOSE]
            )
        with trio.move_on_after(self.body_timeout):
            return await _read_body(receive, self.max_body)
        raise HTTPError(
            408,
            f"the request body did not arrive within {self.body_timeout:g} s",
            [CLOSE],
        )

    def _parse_run(
        self, body: bytes
    ) -> tuple[str, App, VersionedState, str | None, dict[str, tuple[str, ...]]]:
        data = review.json_object(body, "POST /runs")
        review.check_keys(
            data,
            (
                "messages",
                "extra",
                "session_id",
                "graph",
                "interrupt_before",
                "interrupt_after",
            ),
            "the request",
        )
        named = data.get("session_id")
        if named is not None:
            named = _session_id(named)
        graph_name, app = self._app(data.get("graph"))
        stops = review.breakpoints(data, app.graph.nodes)
        messages = data.get("messages", [])
        if not isinstance(messages, list):
            raise HTTPError(400, "'messages' must be a list of {role, content} objects")
        extra = data.get("extra") or {}
        if not isinstance(extra, dict):
            raise HTTPError(400, "'extra' must be a JSON object")
        try:
            parsed = [_message(m) for m in messages]
            state = VersionedState(messages=parsed, extra=extra)
        except (StateError, TypeError, AttributeError) as exc:
            raise HTTPError(400, f"invalid run input: {exc}") from None
        review.check_roles(parsed, self.client_roles)
        return graph_name, app, state, named, stops

    def _remember(self, run: LiveRun) -> None:
        self.runs[run.session_id] = run
        self.runs.move_to_end(run.session_id)
        self._forget_old()

    def _forget_old(self) -> None:
        """Keep ``keep_finished`` finished runs in ``max_finished_bytes``.

        Over the byte budget, the oldest finished runs lose their oldest events
        first (their sentinel stays), then are forgotten.
        """
        finished = [sid for sid, r in self.runs.items() if r.done.is_set()]
        for sid in finished[: max(0, len(finished) - self.keep_finished)]:
            del self.runs[sid]
        ended = [r for r in self.runs.values() if r.done.is_set()]
        total = sum(r.log.size for r in ended)
        for run in ended:
            if total <= self.max_finished_bytes:
                return
            total -= run.log.trim(
                max(0, run.log.size - (total - self.max_finished_bytes))
            )
        for run in ended:
            if total <= self.max_finished_bytes:
                return
            total -= run.log.size
            if self.runs.get(run.session_id) is run:
                del self.runs[run.session_id]

    async def _pump(self, run: LiveRun, events: EventStream) -> None:
        """Copy the run's events into its log (lossless), then close the log.

        Should the run end without its stream-end event, the log gets one made
        here from the run's outcome, so every stream ends with exactly one.
        """
        try:
            with events:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._end_if_silent, run, nursery.cancel_scope)
                    async for event in events:
                        self._log_event(run, event)
                        if event.is_stream_end:
                            break
                    nursery.cancel_scope.cancel()
        finally:
            self._end(run)

    def _log_event(self, run: LiveRun, event: Event) -> None:
        if event.is_stream_end:
            run.status = str(event.metadata.get("status", "error"))
            pending = event.metadata.get("interrupts")
            if isinstance(pending, list | tuple):
                run.interrupts = [dict(i) for i in pending if isinstance(i, Mapping)]
        step = event.metadata.get("step")
        if isinstance(step, int) and not isinstance(step, bool):
            run.step = max(run.step, step)
        seq = run.log.append(event)
        if event.is_stream_end:
            run.end_seq = seq

    async def _end_if_silent(self, run: LiveRun, scope: trio.CancelScope) -> None:
        """Once the run has finished, give its stream a moment to end, then end it."""
        assert run.invocation is not None
        run.outcome = await _outcome(run.invocation)
        await trio.sleep(SILENT_END)
        scope.cancel("the run finished without its stream-end event")

    def _end(self, run: LiveRun) -> None:
        """Close ``run``'s log, adding the sentinel it lacks (if it does)."""
        if run.done.is_set():
            return
        if run.status == "running":
            status, error = run.outcome or ("cancelled", None)
            logger.warning(
                "run %s ended without its stream-end event; the server adds one (%s)",
                run.session_id,
                status,
            )
            self._log_event(
                run, stream_end_event(run.session_id, status, run.step, error)
            )
        run.log.close()
        run.done.set()
        self._forget_old()

    async def _attach(
        self,
        receive: Receive,
        send: Send,
        session_id: str,
        last: int,
        modes: tuple[StreamMode, ...],
    ) -> None:
        run = self.runs.get(session_id)
        if run is None:
            if self.checkpointer is not None and await self._replay(
                receive, send, session_id, last, "events" in modes
            ):
                return
            raise HTTPError(404, f"unknown session {session_id!r}")
        _check_last(last, run.log.last, run.done.is_set())
        if run.done.is_set() and last == run.log.last:
            await _body(send, 204, [], b"")  # nothing after the end: no reconnect
            return
        await send(
            {"type": "http.response.start", "status": 200, "headers": SSE_HEADERS}
        )
        await self._serve_client(run, receive, send, last + 1, modes)

    async def _session_state(
        self, session_id: str, step: int | None, query: Mapping[str, str]
    ) -> dict[str, Any]:
        """The session at its latest step (or ``step``), pending interrupts included.

        A run this server holds answers with the state it ended with (waiting
        briefly for one whose sentinel is out); with a store, the stored facts
        (step, next nodes, interrupts, parent, fork origin) come along.
        """
        run = self.runs.get(session_id)
        status: str | None = None
        ended: VersionedState | None = None
        if step is None and run is not None and run.invocation is not None:
            if run.status == "running":
                raise HTTPError(409, f"session {session_id!r} is still running")
            # The sentinel is out; the run itself may still be finishing.
            with trio.move_on_after(STATE_WAIT):
                await _outcome(run.invocation)
            if not run.invocation.done:
                raise HTTPError(409, f"session {session_id!r} is still finishing")
            status = run.status
            try:
                ended = await run.invocation.join()
            except WorkflowError as exc:
                ended = exc.state
            except RunCancelledError:
                pass
        _, app = self._app_of(session_id, query.get("graph"))
        if self._store(app) is not None:
            try:
                async with self._runner(app, session_id) as runner:
                    view = await runner.get_state(session_id, step=step)
            except HTTPError as exc:
                if exc.status != 404:
                    raise
                if step is not None:
                    raise HTTPError(
                        404, f"session {session_id!r} has no stored step {step}"
                    ) from None
            else:
                answer = review.session_to_json(view, status)
                if ended is not None:
                    answer["state"] = state_to_json(ended)
                return answer
        elif step is not None:
            raise HTTPError(
                404 if run is None else 409,
                f"session {session_id!r} has no stored steps: this server has no"
                " checkpointer",
            )
        if ended is not None:
            assert run is not None
            return {
                "session_id": session_id,
                "status": status,
                "step": run.step,
                "state": state_to_json(ended),
                "interrupts": run.interrupts,
            }
        if run is not None:
            raise HTTPError(404, f"session {session_id!r} ended before any state")
        raise HTTPError(404, f"unknown session {session_id!r}")

    async def _replay(
        self, receive: Receive, send: Send, session_id: str, last: int, steps: bool
    ) -> bool:
        """Stream a stored session, one ``replay.step`` event per stored step.

        Steps are numbered from 1, oldest first; the sentinel follows (alone
        when not ``steps``: the ``replay.step`` events are of the ``events``
        mode). The store
        is read a page at a time, at most ``max_replays`` reads at once, so
        replays never hold the store for long. ``False`` if nothing is stored.
        """
        assert self.checkpointer is not None
        async with self._replay_reads:
            newest = await self.checkpointer.query_steps(session_id, limit=1)
        if not newest.checkpoints:
            return False
        top = newest.checkpoints[0]
        total = newest.total
        status = "completed" if is_complete(top.frontier, top.sends) else "stored"
        end = stream_end_event(
            session_id, status, top.step, timestamp=top.created_at.timestamp()
        )
        _check_last(last, total + 1, True)
        if last == total + 1:
            await _body(send, 204, [], b"")
            return True
        await send(
            {"type": "http.response.start", "status": 200, "headers": SSE_HEADERS}
        )
        await _chunk(send, b": connected\n\n")
        index = last  # steps sent so far (the next one's number is index + 1)
        ended = False
        with trio.CancelScope() as stopping:
            self._replays.add(stopping)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_watch_disconnect, receive, nursery.cancel_scope)
                    if not steps:
                        index = total
                    while index < total:
                        size = min(self.replay_page, total - index)
                        async with self._replay_reads:
                            page = await self.checkpointer.query_steps(
                                session_id,
                                limit=size,
                                offset=total - index - size,
                                max_step=top.step,
                            )
                        if not page.checkpoints:
                            break
                        chunks = []
                        for cp in sorted(page.checkpoints, key=lambda c: c.step):
                            index += 1
                            chunks.append(encode_sse(_replay_event(cp), index))
                        await _chunk(send, b"".join(chunks))
                    await _chunk(send, encode_sse(end, total + 1))
                    ended = True
                    nursery.cancel_scope.cancel()
            finally:
                self._replays.discard(stopping)
        if stopping.cancelled_caught and not ended:  # shutting down: skip to the end
            with trio.move_on_after(1):
                skipped = total - index
                await _chunk(
                    send, _dropped(skipped, skipped) + encode_sse(end, total + 1)
                )
        with trio.move_on_after(1):
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        return True

    # ---------------------------------------------------------------- clients

    async def _serve_client(
        self,
        run: LiveRun,
        receive: Receive,
        send: Send,
        cursor: int,
        modes: tuple[StreamMode, ...],
    ) -> None:
        """Stream ``run``'s log from ``cursor`` until its end or a disconnect.

        Only frames of ``modes`` are sent (the stream-end event always is);
        the others keep their numbers, so ``Last-Event-ID`` works the same.
        """
        # A first comment puts the response headers on the wire at once: clients
        # know the stream is open before the run's first event.
        await _chunk(send, b": connected\n\n")
        run.clients += 1
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_watch_disconnect, receive, nursery.cancel_scope)
                await self._stream(run, send, cursor, _wanted(modes))
                nursery.cancel_scope.cancel()
        finally:
            run.clients -= 1
            if (
                run.clients == 0
                and run.invocation is not None
                and not run.done.is_set()
            ):
                await self._cancel_when_unwatched(run)
        with trio.move_on_after(1):
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _cancel_when_unwatched(self, run: LiveRun) -> None:
        if self.grace > 0 and not self.closing:
            with trio.CancelScope(shield=True), trio.move_on_after(self.grace):
                await run.done.wait()
        if run.clients == 0 and run.invocation is not None and not run.done.is_set():
            run.invocation.cancel("no client is watching the run any more")

    async def _stream(
        self, run: LiveRun, send: Send, cursor: int, wanted: frozenset[bytes] | None
    ) -> int:
        dropped_total = 0
        told = False
        while True:
            with trio.move_on_after(self.keepalive) as idle:
                items, dropped = await run.log.read(cursor)
            if idle.cancelled_caught:
                await _chunk(send, b": keep-alive\n\n")
                continue
            if not items:
                return cursor
            chunks: list[bytes] = []
            if dropped:
                dropped_total += dropped
                if not told and cursor <= run.log.trimmed_through:
                    told = True
                    chunks.append(_truncated(run))
                chunks.append(_dropped(dropped, dropped_total))
            for seq, frame in items:
                if wanted is None or seq == run.end_seq or _frame_type(frame) in wanted:
                    chunks.append(frame)  # encoded once, when the event was logged
                cursor = seq + 1
            if chunks:
                await _chunk(send, b"".join(chunks))
            if run.log.closed and cursor >= run.log.next:
                return cursor


# ------------------------------------------------------------------- helpers


def _wanted(modes: tuple[StreamMode, ...]) -> frozenset[bytes] | None:
    """The ``event:`` types a client of ``modes`` gets (``None``: all)."""
    if len(modes) == len(STREAM_MODES):
        return None
    return frozenset(kind.encode() for kind in mode_types(modes))


def _frame_type(frame: bytes) -> bytes:
    """The ``event:`` type of a frame `encode_sse` made."""
    start = frame.index(b"event: ") + 7
    return frame[start : frame.index(b"\n", start)]


async def _outcome(invocation: Invocation) -> tuple[str, str | None]:
    """Wait for ``invocation``; its status and error text, like its sentinel's."""
    try:
        await invocation.join()
    except RunCancelledError:
        return "cancelled", None
    except Exception as exc:
        return "error", describe_exception(exc)
    return "completed", None


def _stored_view(cp: Checkpoint) -> SessionState:
    """A stored step with nothing pending, as `AppRunner.get_state` shows one."""
    return SessionState(
        session_id=cp.session_id,
        state=cp.state,
        step=cp.step,
        next=tuple(node for node in cp.frontier if node not in (START, END)),
        parent_step=cp.parent_step,
    )


def _replay_event(cp: Any) -> DiagnosticEvent:
    ran = ", ".join(cp.ran_nodes) or "-"
    upcoming = ", ".join(cp.frontier) or "-"
    return DiagnosticEvent(
        scope="replay.step",
        message=f"step {cp.step}: ran {ran}; next {upcoming}",
        timestamp=cp.created_at.timestamp(),
    )


def _dropped(count: int, total: int) -> bytes:
    return (
        b"event: dropped\ndata: "
        + dumps_bytes({"dropped": count, "total": total})
        + b"\n\n"
    )


def _truncated(run: LiveRun) -> bytes:
    """The unnumbered diagnostic frame saying memory bounds cost this run events."""
    event = DiagnosticEvent(
        scope=TRUNCATED_SCOPE,
        message=(
            f"the server dropped the events of run {run.session_id} up to"
            f" #{run.log.trimmed_through} to bound its memory"
        ),
        metadata={"session_id": run.session_id, "through": run.log.trimmed_through},
    )
    return encode_sse(event)


async def _watch_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel("client disconnected")
            return


async def _chunk(send: Send, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})


async def _body(send: Send, status: int, headers: Headers, body: bytes) -> None:
    # No Content-Length: the chunked body's last chunk goes out with the end of
    # the response, so a client cannot hang up between the two (hypercorn's
    # trio worker then logs a BusyResourceError from two concurrent sends).
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _json(
    send: Send, status: int, data: Any, headers: Headers | None = None
) -> None:
    csp = (b"content-security-policy", security.API_CSP)
    await _body(send, status, [JSON_TYPE, csp, *(headers or ())], dumps_bytes(data))


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise HTTPError(
            405,
            f"method {method} not allowed here; use {' or '.join(allowed)}",
            [(b"allow", ", ".join(allowed).encode())],
        )


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HTTPError(400, "the client left before sending its whole request")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise HTTPError(413, f"request body larger than {limit} bytes", [CLOSE])
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _message(item: Any) -> Message:
    if isinstance(item, str):
        return Message.user(item)
    if not isinstance(item, dict):
        raise StateError(f"a message is a {{role, content}} object, got {item!r}")
    content: Any = item.get("content")
    return Message(item.get("role", "user"), content)


def _unknown(exc: SessionNotFound, session_id: str) -> str:
    if exc.session_id != session_id:
        return f"unknown session {exc.session_id!r}"
    return f"unknown session {session_id!r}"


def _session_id(value: object) -> str:
    try:
        return check_session_id(value)
    except InvalidSessionIdError as exc:
        raise HTTPError(400, str(exc)) from None


def _segments(scope: Scope) -> list[str]:
    """The path's segments, each percent-decoded on its own (``%2F`` stays in one)."""
    raw = scope.get("raw_path")
    if isinstance(raw, bytes) and raw:
        text = raw.decode("latin-1").partition("?")[0]
        parts = [unquote(p, errors="replace") for p in text.split("/")]
    else:
        parts = str(scope["path"]).split("/")
    return [p for p in parts if p]


def _query(scope: Scope) -> dict[str, str]:
    return dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))


def _last_event_id(scope: Scope) -> int:
    """``Last-Event-ID`` (header, else ``?last_event_id=``): 0 when absent."""
    text = security.header(scope, b"last-event-id")
    if text is None:
        text = _query(scope).get("last_event_id", "")
    text = text.strip()
    if not text:
        return 0
    if not _DIGITS.fullmatch(text):
        shown = text if len(text) <= 40 else text[:40] + "…"
        raise HTTPError(
            400,
            "Last-Event-ID must be an event number (a non-negative integer of at"
            f" most {MAX_EVENT_ID_DIGITS} digits), got {shown!r}",
        )
    return int(text)


def _check_last(last: int, newest: int, ended: bool) -> None:
    """Refuse a ``Last-Event-ID`` beyond the newest event a client can have seen."""
    if last > newest:
        state = "ended with" if ended else "is at"
        raise HTTPError(
            400,
            f"Last-Event-ID {last} is beyond this run's events: it {state} event"
            f" {newest}",
        )


_FILES: dict[str, bytes] = {}


def _file(name: str) -> bytes:
    """A file of the viewer (read once)."""
    if name not in _FILES:
        _FILES[name] = (
            resources.files("weavegraph.serve").joinpath("static", name).read_bytes()
        )
    return _FILES[name]


def sse_app(
    app_or_apps: App | Mapping[str, App],
    *,
    checkpointer: Checkpointer | None = None,
    max_body: int = 1 << 20,
    body_timeout: float = 10.0,
    keepalive: float = 15.0,
    log_capacity: int = 10_000,
    max_log_bytes: int = 8 << 20,
    keep_finished: int = 100,
    max_finished_bytes: int = 64 << 20,
    grace: float = 0.0,
    max_connections: int | None = None,
    max_runs: int = 64,
    max_replays: int = 2,
    authorize: Authorize | None = None,
    allowed_hosts: Iterable[str] | None = None,
    cors_origins: Iterable[str] | None = None,
    client_roles: Iterable[str] | None = ("user", "assistant"),
) -> SSEApp:
    """An ASGI 3 application serving ``app_or_apps`` over Server-Sent Events.

    Args:
        app_or_apps: One `App`, or several by name (clients pick with ``graph``).
        checkpointer: Saves every run's steps, and lets ``GET /runs/{id}/events``
            replay runs this process no longer holds. Resuming, editing,
            forking and reading past steps need one (this or each app's own).
        max_body: Largest accepted request body, in bytes (413 beyond).
        body_timeout: Seconds a client has to send its whole request body (408
            after; the server's keep-alive timeout bounds the headers).
        keepalive: Seconds of silence before a ``: keep-alive`` comment.
        log_capacity: Events of a run kept for late or reconnecting clients; a
            client further behind sees an ``event: dropped`` with the count.
        max_log_bytes: Bytes of encoded events kept per run (the newest event is
            always kept).
        keep_finished: Finished runs kept in memory for re-attaching.
        max_finished_bytes: Bytes all finished runs' logs may hold together;
            beyond, the oldest lose their oldest events, then are forgotten.
            A client that misses events for a memory bound is told so by a
            ``serve.log_truncated`` diagnostic frame.
        grace: Seconds a run survives without any client (0: cancelled at once).
        max_connections: Requests served at once, open streams included (503
            beyond); ``None``: half the process's file-descriptor limit, between
            16 and 1024.
        max_runs: Runs going at once (503 beyond).
        max_replays: Stored-session replays reading the checkpointer at once
            (others wait their turn, a page at a time).
        authorize: ``authorize(request, action)``, sync or async, called before
            every action (``"start"``, ``"resume"``, ``"read"``, ``"list"``) with a
            `Request`; ``True`` allows, ``False`` (or anything else) answers 403,
            raising `AuthorizationError` answers its 401 or 403. Resuming,
            editing (``PATCH``) and forking a session are ``"resume"``.
        allowed_hosts: Host names the ``Host`` header may carry (421 otherwise);
            ``None``: loopback names on connections to a loopback address, any
            host on others; ``"*"`` in the list allows any host.
        cors_origins: Origins allowed to call the server from a browser (CORS,
            with preflight); none by default.
        client_roles: Message roles a client may send (403 otherwise); ``None``
            allows any role.

    Raises:
        ConfigError: an option is out of range, or an app is not an `App`.
    """
    apps = app_or_apps if isinstance(app_or_apps, Mapping) else {"default": app_or_apps}
    return SSEApp(
        apps,
        checkpointer=checkpointer,
        max_body=max_body,
        body_timeout=body_timeout,
        keepalive=keepalive,
        log_capacity=log_capacity,
        max_log_bytes=max_log_bytes,
        keep_finished=keep_finished,
        max_finished_bytes=max_finished_bytes,
        grace=grace,
        max_connections=max_connections,
        max_runs=max_runs,
        max_replays=max_replays,
        authorize=authorize,
        allowed_hosts=allowed_hosts,
        cors_origins=cors_origins,
        client_roles=client_roles,
    )
