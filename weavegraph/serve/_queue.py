"""`QueueSSEApp`: the SSE app whose runs go through a PostgreSQL run queue.

``POST /runs`` and ``POST /runs/{id}/resume`` enqueue the run
(`RunQueue.submit`, breakpoints and modes included) and stream its events from
the queue's event log, whichever worker executes it, across a worker takeover;
``GET /runs/{session_id}/events`` streams any queued run's events, from the
start or after ``Last-Event-ID``, from any server on the same database. The
event ids are the run's sequence numbers in the log, the same on every server.
``GET /runs`` lists the queue's newest runs. Reading, editing and forking
stored sessions are `SSEApp`'s routes over the shared checkpoint store; an
edit of a session the queue is running is refused (409).

As in the single-process server, a run belongs to its watchers: every client
streaming it, on any server, is one (a row renewed while it streams). Once
none has watched it for the server's ``grace``, it is cancelled through the
queue, on whichever worker runs it, unless it was posted with
``?detach=true``. Shutting a server down ends its streams but not the runs:
its clients' watcher rows expire by themselves, so they may re-attach to
another server meanwhile.
"""

from __future__ import annotations

import contextvars
import logging
import uuid
from collections.abc import Mapping
from typing import Any

import attrs
import trio

from .._core.errors import (
    ConfigError,
    HTTPError,
    QueueError,
    RunAlreadyActive,
    StateError,
    UnknownAppError,
)
from .._core.session import Resume
from .._core.state import VersionedState
from .._runtime.app import App
from ..checkpoint.record import Checkpointer
from ..events.steps import STREAM_MODES, StreamMode, combine_modes, mode_types
from ..scale.queue import RunQueue, RunStatus
from . import _review as review
from ._security import Request
from ._sse import (
    RUN_MODES,
    SSE_HEADERS,
    Receive,
    Scope,
    Send,
    SSEApp,
    _body,
    _chunk,
    _json,
    _last_event_id,
    _query,
    _segments,
    _session_id,
    _watch_disconnect,
    encode_sse,
)

logger = logging.getLogger("weavegraph.serve")


# The request's ``?detach=`` (each request runs in a task of its own).
_DETACH: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "weavegraph_detach", default=False
)
# The queue's latest run of the request's session, once looked up.
_QUEUED: contextvars.ContextVar[RunStatus | None] = contextvars.ContextVar(
    "weavegraph_queued", default=None
)


class QueueSSEApp(SSEApp):
    """An `SSEApp` that runs nothing itself: runs go to ``queue``'s workers.

    Args:
        apps: The apps by the names the workers serve them under.
        queue: An open `RunQueue` (the caller closes it after the server).
        checkpointer: The store on the queue's database (for state, history,
            edits and forks).
        options: `sse_app`'s other options (``grace``: seconds a run its
            clients own survives without any).
    """

    def __init__(
        self,
        apps: Mapping[str, App],
        *,
        queue: RunQueue,
        checkpointer: Checkpointer | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(queue, RunQueue):
            raise ConfigError(f"QueueSSEApp takes a RunQueue, got {queue!r}")
        super().__init__(apps, checkpointer=checkpointer, **options)
        self.queue = queue
        self._streams: set[trio.CancelScope] = set()

    def _shutdown(self) -> None:
        super()._shutdown()
        for stream in list(self._streams):
            stream.cancel("server shutting down")

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        parts = _segments(scope)
        query = _query(scope)
        if method == "POST":
            _DETACH.set(_flag(query.get("detach", "false")))
        if parts == ["runs"] and method == "GET":
            await self._authorize(Request.from_scope(scope), "list")
            await _json(send, 200, {"runs": await self._queue_runs()})
            return
        if len(parts) == 3 and parts[0] == "runs":
            session_id = _session_id(parts[1])
            run = await self._queued(session_id)
            _QUEUED.set(run)
            if run is not None and method == "GET" and parts[2] == "events":
                last = _last_event_id(scope)
                modes = review.modes_from_query(query)
                request = attrs.evolve(Request.from_scope(scope), session_id=session_id)
                await self._authorize(request, "read")
                if last > run.last_seq and run.done:
                    raise HTTPError(
                        400,
                        f"Last-Event-ID {last} is beyond this run's events: it"
                        f" ended with event {run.last_seq}",
                    )
                if run.done and last == run.last_seq:
                    await _body(send, 204, [], b"")  # nothing after the end
                    return
                await self._follow(receive, send, run, last, modes, watcher=None)
                return
            if (
                run is not None
                and not run.done
                and method == "POST"
                and parts[2] == "state"
            ):
                raise HTTPError(
                    409,
                    f"session {session_id!r} is {run.status} in the run queue:"
                    " edit it once the run ended",
                )
        await super()._route(scope, receive, send)

    def _app_of(self, session_id: str, name: object) -> tuple[str, App]:
        run = _QUEUED.get()
        if (
            name is None
            and run is not None
            and run.session_id == session_id
            and run.app in self.apps
        ):
            return run.app, self.apps[run.app]
        return super()._app_of(session_id, name)

    async def _queued(self, session_id: str) -> RunStatus | None:
        try:
            return await self.queue.status(session_id)
        except QueueError as exc:
            raise HTTPError(503, f"the run queue is unavailable: {exc}") from None

    async def _queue_runs(self) -> list[dict[str, Any]]:
        try:
            runs = await self.queue.list_runs(limit=self.keep_finished + self.max_runs)
        except QueueError as exc:
            raise HTTPError(503, f"the run queue is unavailable: {exc}") from None
        return [
            {
                "session_id": run.session_id,
                "graph": run.app,
                "status": run.status,
                "events": run.last_seq,
                "clients": run.watchers,
                "run_id": run.run_id,
                "worker": run.worker,
                "attempts": run.attempts,
                "detached": not run.watched,
            }
            for run in reversed(runs)  # oldest first, as SSEApp lists
        ]

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
        """Enqueue the run (a new one or a resume) and stream it to this
        client, who watches it unless the request said ``?detach=true``."""
        watcher = None if _DETACH.get() else f"client-{uuid.uuid4()}"
        try:
            run = await self.queue.submit(
                graph_name,
                session_id,
                run_input,
                interrupt_before=stops.get("interrupt_before"),
                interrupt_after=stops.get("interrupt_after"),
                modes=combine_modes(RUN_MODES, modes),
                watcher=watcher,
                grace=self.grace,
            )
        except RunAlreadyActive as exc:
            raise HTTPError(409, str(exc)) from None
        except UnknownAppError as exc:
            raise HTTPError(503, str(exc)) from None
        except StateError as exc:
            raise HTTPError(400, str(exc)) from None
        except QueueError as exc:
            raise HTTPError(503, f"the run queue is unavailable: {exc}") from None
        await self._follow(receive, send, run, 0, modes, watcher=watcher)

    async def _follow(
        self,
        receive: Receive,
        send: Send,
        run: RunStatus,
        last: int,
        modes: tuple[StreamMode, ...],
        *,
        watcher: str | None,
    ) -> None:
        """Stream ``run``'s logged events after ``last`` until its end or a
        disconnect, the client one of the run's watchers meanwhile (``watcher``:
        its name, already attached by the submission)."""
        headers = [
            *SSE_HEADERS,
            (b"x-weavegraph-session", run.session_id.encode()),
        ]
        wanted = (
            None if len(modes) == len(STREAM_MODES) else frozenset(mode_types(modes))
        )
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await _chunk(send, b": connected\n\n")
        stream = trio.CancelScope()
        self._streams.add(stream)
        name = watcher or f"client-{uuid.uuid4()}"
        try:
            async with self.queue.watch(run.run_id, name, grace=self.grace) as watch:
                try:
                    with stream:
                        await self._pump_log(receive, send, run, last, wanted)
                finally:
                    watch.linger = self.closing
        except QueueError as exc:
            logger.error("following run %s: %s", run.run_id, exc)
        finally:
            self._streams.discard(stream)
        with trio.move_on_after(1):
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _pump_log(
        self,
        receive: Receive,
        send: Send,
        run: RunStatus,
        last: int,
        wanted: frozenset[str] | None,
    ) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_disconnect, receive, nursery.cancel_scope)
            events = self.queue.run_events(run.run_id, after=last)
            while True:
                with trio.move_on_after(self.keepalive) as idle:
                    try:
                        seq, event = await events.__anext__()
                    except StopAsyncIteration:
                        break
                if idle.cancelled_caught:
                    await _chunk(send, b": keep-alive\n\n")
                    continue
                if wanted is None or event.is_stream_end or event.type in wanted:
                    await _chunk(send, encode_sse(event, seq))
            nursery.cancel_scope.cancel()


def _flag(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("", "0", "false", "no"):
        return False
    raise HTTPError(400, f"detach must be true or false, got {text!r}")


def queue_sse_app(
    apps: Mapping[str, App],
    queue: RunQueue,
    *,
    checkpointer: Checkpointer | None = None,
    **options: Any,
) -> QueueSSEApp:
    """An SSE app whose runs go through ``queue`` (see `QueueSSEApp`).

    Raises:
        ConfigError: bad apps or options.
    """
    return QueueSSEApp(apps, queue=queue, checkpointer=checkpointer, **options)
