"""An ASGI application that runs workflows and streams them as Server-Sent Events.

Routes:

* ``POST /runs`` — start a run from a JSON body and stream its events;
* ``GET /runs/{session_id}/events`` — attach to a run (live, recently finished, or
  stored), resuming after ``Last-Event-ID``;
* ``GET /runs/{session_id}/state`` — the state a run ended with;
* ``GET /runs`` — the runs this server knows;
* ``GET /graph`` — nodes, edges and a Mermaid diagram;
* ``GET /`` — the live run viewer page.

A run lives as long as somebody watches it: when its last client disconnects it
is cancelled (its nodes see ``trio.Cancelled`` at once). Runs execute in the
request's own nursery, so the app needs no background task and works under any
trio ASGI server (hypercorn's trio worker in particular).
"""

from __future__ import annotations

import logging
import math
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from importlib import resources
from typing import Any

import attrs
import trio

from .._codec import dumps_bytes, loads, state_to_json
from .._core.errors import RunCancelledError, StateError, WeavegraphError, WorkflowError
from .._core.frontier import is_complete
from .._core.graph import display
from .._core.state import Message, VersionedState
from .._runtime.app import App
from .._runtime.invocation import Invocation
from ..checkpoint.record import Checkpointer
from ..events.bus import EventBusConfig
from ..events.stream import EventStream
from ..events.types import DiagnosticEvent, Event, stream_end_event
from ._log import RunLog

logger = logging.getLogger("weavegraph.serve")

Scope = MutableMapping[str, Any]
ASGIMessage = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[ASGIMessage]]
Send = Callable[[ASGIMessage], Awaitable[None]]

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
JSON_HEADERS = [(b"content-type", b"application/json")]
STATE_WAIT = 5.0  # seconds GET /runs/{id}/state waits for a run that is ending


class HTTPError(WeavegraphError):
    """A request the app refuses, answered with ``status`` and a JSON body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


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
    """A run this server started, with its event log and its watchers."""

    session_id: str
    graph: str
    log: RunLog
    invocation: Invocation | None = None
    clients: int = 0
    done: trio.Event = attrs.field(factory=trio.Event)
    status: str = "running"


class SSEApp:
    """The ASGI application returned by `sse_app`."""

    def __init__(
        self,
        apps: Mapping[str, App],
        *,
        checkpointer: Checkpointer | None = None,
        max_body: int = 1 << 20,
        keepalive: float = 15.0,
        log_capacity: int = 10_000,
        keep_finished: int = 100,
        grace: float = 0.0,
    ) -> None:
        if not apps:
            raise ValueError("sse_app needs at least one App to serve")
        for name, app in apps.items():
            if not isinstance(app, App):
                raise TypeError(f"sse_app: {name!r} is not a compiled App: {app!r}")
        self.apps = dict(apps)
        self.default = next(iter(self.apps))
        self.checkpointer = checkpointer
        self.max_body = max_body
        self.keepalive = keepalive
        self.log_capacity = log_capacity
        self.keep_finished = keep_finished
        self.grace = grace
        self.runs: OrderedDict[str, LiveRun] = OrderedDict()
        self.shutting_down = trio.Event()

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            raise RuntimeError(f"weavegraph's SSE app does not serve {scope['type']}")
        try:
            await self._route(scope, receive, send)
        except HTTPError as exc:
            await _json(send, exc.status, {"error": str(exc)})

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
        """Cancel every live run; their streams end with the cancelled sentinel."""
        self.shutting_down.set()
        for run in list(self.runs.values()):
            if run.invocation is not None and not run.invocation.done:
                run.invocation.cancel("server shutting down")

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        path = scope["path"].rstrip("/") or "/"
        parts = path.strip("/").split("/")
        if path == "/":
            _allow(method, "GET")
            await _body(
                send, 200, [(b"content-type", b"text/html; charset=utf-8")], _page()
            )
        elif path == "/graph":
            _allow(method, "GET")
            await _json(send, 200, self._graph(_query(scope).get("graph")))
        elif path == "/runs":
            if method == "POST":
                await self._post_run(scope, receive, send)
            else:
                _allow(method, "GET")
                await _json(send, 200, {"runs": self._list_runs()})
        elif len(parts) == 3 and parts[0] == "runs" and parts[2] == "events":
            _allow(method, "GET")
            await self._attach(scope, receive, send, parts[1])
        elif len(parts) == 3 and parts[0] == "runs" and parts[2] == "state":
            _allow(method, "GET")
            await _json(send, 200, await self._final_state(parts[1]))
        else:
            raise HTTPError(404, f"no route for {method} {scope['path']}")

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
            "nodes": [display(n) for n in graph.topological_order()],
            "edges": [[display(a), display(b)] for a, b in graph.edge_list()],
            "conditional": [
                {
                    "source": display(c.source),
                    "targets": [display(t) for t in c.declared_targets() or ()],
                }
                for c in graph.conditionals
            ],
            "mermaid": graph.to_mermaid(),
            "graph_hash": graph.graph_hash,
        }

    def _list_runs(self) -> list[dict[str, Any]]:
        return [
            {
                "session_id": run.session_id,
                "graph": run.graph,
                "status": run.status,
                "events": run.log.next - 1,
                "clients": run.clients,
            }
            for run in self.runs.values()
        ]

    async def _post_run(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_body(receive, self.max_body)
        graph_name, app, state, session_id = self._parse_run(body)
        if session_id in self.runs and not self.runs[session_id].done.is_set():
            raise HTTPError(409, f"session {session_id!r} is already running")
        config = attrs.evolve(
            app.config,
            session_id=session_id,
            checkpointer=self.checkpointer or app.config.checkpointer,
            event_bus=EventBusConfig(
                capacity=app.config.event_bus.capacity,
                sinks=app.config.event_bus.sinks,
                overflow="block",  # the log must see everything
            ),
        )
        run = LiveRun(
            session_id=session_id,
            graph=graph_name,
            log=RunLog(self.log_capacity, encode_sse),
        )
        self._remember(run)
        await send(
            {"type": "http.response.start", "status": 200, "headers": SSE_HEADERS}
        )
        async with trio.open_nursery() as nursery:
            invocation, events = await app.start_streaming(
                nursery, state, config=config
            )
            run.invocation = invocation
            nursery.start_soon(self._pump, run, events)
            await self._serve_client(run, receive, send, cursor=1)

    def _parse_run(self, body: bytes) -> tuple[str, App, VersionedState, str]:
        if body.strip():
            try:
                data = loads(body)
            except ValueError as exc:
                raise HTTPError(
                    400, f"the request body is not valid JSON: {exc}"
                ) from None
        else:
            data = {}
        if not isinstance(data, dict):
            raise HTTPError(400, "the request body must be a JSON object")
        unknown = set(data) - {"messages", "extra", "session_id", "graph"}
        if unknown:
            raise HTTPError(400, f"unknown keys in the request: {sorted(unknown)}")
        graph_name, app = self._app(data.get("graph"))
        messages = data.get("messages", [])
        if not isinstance(messages, list):
            raise HTTPError(400, "'messages' must be a list of {role, content} objects")
        try:
            parsed = [_message(m) for m in messages]
            state = VersionedState(messages=parsed, extra=data.get("extra") or {})
        except (StateError, TypeError, AttributeError) as exc:
            raise HTTPError(400, f"invalid run input: {exc}") from None
        session_id = data.get("session_id") or f"run-{uuid.uuid4()}"
        if not isinstance(session_id, str):
            raise HTTPError(400, "'session_id' must be a string")
        return graph_name, app, state, session_id

    def _remember(self, run: LiveRun) -> None:
        self.runs[run.session_id] = run
        self.runs.move_to_end(run.session_id)
        finished = [sid for sid, r in self.runs.items() if r.done.is_set()]
        for sid in finished[: max(0, len(finished) - self.keep_finished)]:
            del self.runs[sid]

    async def _pump(self, run: LiveRun, events: EventStream) -> None:
        """Copy the run's events into its log (lossless), then close the log."""
        with events:
            async for event in events:
                run.log.append(event)
                if event.is_stream_end:
                    run.status = str(event.metadata.get("status", "error"))
        run.log.close()
        run.done.set()

    async def _attach(
        self, scope: Scope, receive: Receive, send: Send, session_id: str
    ) -> None:
        last = _last_event_id(scope)
        run = self.runs.get(session_id)
        if run is None:
            run = await self._stored_run(session_id)
        if run is None:
            raise HTTPError(404, f"unknown session {session_id!r}")
        await send(
            {"type": "http.response.start", "status": 200, "headers": SSE_HEADERS}
        )
        await self._serve_client(run, receive, send, cursor=last + 1)

    async def _final_state(self, session_id: str) -> dict[str, Any]:
        """The state a run ended with (waiting briefly for one just ending)."""
        run = self.runs.get(session_id)
        if run is not None and run.invocation is not None:
            with trio.move_on_after(STATE_WAIT):
                await run.done.wait()
            if not run.invocation.done:
                raise HTTPError(409, f"session {session_id!r} is still running")
            try:
                state = await run.invocation.join()
            except WorkflowError as exc:
                if exc.state is None:
                    raise HTTPError(
                        404, f"session {session_id!r} has no state"
                    ) from None
                state = exc.state
            except RunCancelledError:
                raise HTTPError(
                    404, f"session {session_id!r} was cancelled before any state"
                ) from None
            return {
                "session_id": session_id,
                "status": run.status,
                "state": state_to_json(state),
            }
        if self.checkpointer is not None:
            stored = await self.checkpointer.load_latest(session_id)
            if stored is not None:
                return {
                    "session_id": session_id,
                    "status": "completed" if is_complete(stored.frontier) else "stored",
                    "step": stored.step,
                    "state": state_to_json(stored.state),
                }
        raise HTTPError(404, f"unknown session {session_id!r}")

    async def _stored_run(self, session_id: str) -> LiveRun | None:
        """A finished log rebuilt from the checkpointer, one event per stored step."""
        if self.checkpointer is None:
            return None
        page = await self.checkpointer.query_steps(session_id, limit=1000)
        if not page.checkpoints:
            return None
        log = RunLog(self.log_capacity, encode_sse)
        steps = sorted(page.checkpoints, key=lambda c: c.step)
        for cp in steps:
            ran = ", ".join(cp.ran_nodes) or "-"
            upcoming = ", ".join(cp.frontier) or "-"
            log.append(
                DiagnosticEvent(
                    scope="replay.step",
                    message=f"step {cp.step}: ran {ran}; next {upcoming}",
                    timestamp=cp.created_at.timestamp(),
                )
            )
        last = steps[-1]
        status = "completed" if is_complete(last.frontier) else "stored"
        log.append(
            stream_end_event(
                session_id,
                status,
                last.step,
                timestamp=last.created_at.timestamp(),
            )
        )
        log.close()
        run = LiveRun(session_id=session_id, graph="", log=log, status=status)
        run.done.set()
        return run

    # ---------------------------------------------------------------- clients

    async def _serve_client(
        self, run: LiveRun, receive: Receive, send: Send, cursor: int
    ) -> None:
        """Stream ``run``'s log from ``cursor`` until its end or a disconnect."""
        # A first comment puts the response headers on the wire at once: clients
        # know the stream is open before the run's first event.
        await _chunk(send, b": connected\n\n")
        run.clients += 1
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_watch_disconnect, receive, nursery.cancel_scope)
                cursor = await self._stream(run, send, cursor)
                nursery.cancel_scope.cancel()
        finally:
            run.clients -= 1
            if (
                run.clients == 0
                and run.invocation is not None
                and not run.done.is_set()
            ):
                await self._cancel_when_unwatched(run)
        if not self.shutting_down.is_set() or run.done.is_set():
            with trio.move_on_after(1):
                await send(
                    {"type": "http.response.body", "body": b"", "more_body": False}
                )

    async def _cancel_when_unwatched(self, run: LiveRun) -> None:
        if self.grace > 0:
            with trio.CancelScope(shield=True), trio.move_on_after(self.grace):
                await run.done.wait()
        if run.clients == 0 and run.invocation is not None and not run.done.is_set():
            run.invocation.cancel("no client is watching the run any more")

    async def _stream(self, run: LiveRun, send: Send, cursor: int) -> int:
        dropped_total = 0
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
                chunks.append(
                    b"event: dropped\ndata: "
                    + dumps_bytes({"dropped": dropped, "total": dropped_total})
                    + b"\n\n"
                )
            for seq, _, frame in items:
                chunks.append(frame)  # encoded once, when the event was logged
                cursor = seq + 1
            await _chunk(send, b"".join(chunks))
            if run.log.closed and cursor >= run.log.next:
                return cursor


# ------------------------------------------------------------------- helpers


async def _watch_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel("client disconnected")
            return


async def _chunk(send: Send, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})


async def _body(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _json(send: Send, status: int, data: Any) -> None:
    await _body(send, status, JSON_HEADERS, dumps_bytes(data))


def _allow(method: str, allowed: str) -> None:
    if method != allowed:
        raise HTTPError(405, f"method {method} not allowed here; use {allowed}")


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
            raise HTTPError(413, f"request body larger than {limit} bytes")
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


def _query(scope: Scope) -> dict[str, str]:
    from urllib.parse import parse_qsl

    return dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))


def _last_event_id(scope: Scope) -> int:
    for name, value in scope.get("headers", []):
        if name.lower() == b"last-event-id":
            text = value.decode("latin-1").strip()
            break
    else:
        text = _query(scope).get("last_event_id", "0")
    try:
        last = int(text or "0")
    except ValueError:
        raise HTTPError(
            400, f"Last-Event-ID must be an event number, got {text!r}"
        ) from None
    if last < 0 or not math.isfinite(last):
        raise HTTPError(400, f"Last-Event-ID must be >= 0, got {last}")
    return last


_PAGE: bytes | None = None


def _page() -> bytes:
    global _PAGE
    if _PAGE is None:
        _PAGE = (
            resources.files("weavegraph.serve")
            .joinpath("static/viewer.html")
            .read_bytes()
        )
    return _PAGE


def sse_app(
    app_or_apps: App | Mapping[str, App],
    *,
    checkpointer: Checkpointer | None = None,
    max_body: int = 1 << 20,
    keepalive: float = 15.0,
    log_capacity: int = 10_000,
    keep_finished: int = 100,
    grace: float = 0.0,
) -> SSEApp:
    """An ASGI 3 application serving ``app_or_apps`` over Server-Sent Events.

    Args:
        app_or_apps: One `App`, or several by name (clients pick with ``graph``).
        checkpointer: Saves every run's steps, and lets ``GET /runs/{id}/events``
            replay runs this process no longer holds.
        max_body: Largest accepted request body, in bytes (413 beyond).
        keepalive: Seconds of silence before a ``: keep-alive`` comment.
        log_capacity: Events of a run kept for late or reconnecting clients; a
            client further behind sees an ``event: dropped`` with the count.
        keep_finished: Finished runs kept in memory for re-attaching.
        grace: Seconds a run survives without any client (0: cancelled at once).
    """
    apps = app_or_apps if isinstance(app_or_apps, Mapping) else {"default": app_or_apps}
    return SSEApp(
        apps,
        checkpointer=checkpointer,
        max_body=max_body,
        keepalive=keepalive,
        log_capacity=log_capacity,
        keep_finished=keep_finished,
        grace=grace,
    )
