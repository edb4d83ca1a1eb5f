"""`QueueSSEApp`: the SSE app whose runs go through a PostgreSQL run queue.

``POST /runs`` enqueues the run (`RunQueue.submit`) and streams its events from
the queue's event log, whichever worker executes it, across a worker takeover;
``GET /runs/{session_id}/events`` streams any queued run's events, from the
start or after ``Last-Event-ID``, from any server on the same database. The
event ids are the run's sequence numbers in the log, the same on every server.
Every other route (state, history, resume, fork, the viewer) is `SSEApp`'s,
over the shared checkpoint store.

The client that posted a run owns it: when it leaves before the run ended, the
run is cancelled through the queue (on whichever worker runs it), unless it
asked ``?detach=true``. Clients that attach later never cancel it. Shutting a
server down ends its streams but not the runs: they go on on their workers.
"""

from __future__ import annotations

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
    UnknownAppError,
)
from .._runtime.app import App
from ..checkpoint.record import Checkpointer
from ..scale.queue import RunQueue, RunStatus
from . import _security as security
from ._security import Request
from ._sse import (
    SSE_HEADERS,
    Receive,
    Scope,
    Send,
    SSEApp,
    _chunk,
    _last_event_id,
    _query,
    _segments,
    _session_id,
    _watch_disconnect,
    encode_sse,
)

logger = logging.getLogger("weavegraph.serve")


class QueueSSEApp(SSEApp):
    """An `SSEApp` that runs nothing itself: runs go to ``queue``'s workers.

    Args:
        apps: The apps by the names the workers serve them under.
        queue: An open `RunQueue` (the caller closes it after the server).
        checkpointer: The store on the queue's database (for state, history,
            resume and fork).
        options: `sse_app`'s other options.
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
        if parts == ["runs"] and method == "POST":
            await self._enqueue(scope, receive, send)
            return
        if method == "GET" and len(parts) == 3 and parts[::2] == ["runs", "events"]:
            session_id = _session_id(parts[1])
            last = _last_event_id(scope)
            run = await self._queued(session_id)
            if run is not None:
                request = attrs.evolve(Request.from_scope(scope), session_id=session_id)
                await self._authorize(request, "read")
                if last > run.last_seq and run.done:
                    raise HTTPError(
                        400,
                        f"Last-Event-ID {last} is beyond this run's events: it"
                        f" ended with event {run.last_seq}",
                    )
                await self._follow(receive, send, run, last, owner=False)
                return
        await super()._route(scope, receive, send)

    async def _queued(self, session_id: str) -> RunStatus | None:
        try:
            return await self.queue.status(session_id)
        except QueueError as exc:
            raise HTTPError(503, f"the run queue is unavailable: {exc}") from None

    async def _enqueue(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not security.is_json(scope):
            raise HTTPError(
                415, "POST /runs takes a JSON body: send Content-Type: application/json"
            )
        detach = _flag(_query(scope).get("detach", "false"))
        body = await self._read_body(scope, receive)
        graph_name, _, state, named, stops = self._parse_run(body)
        if stops:
            raise HTTPError(
                400,
                "a queue-backed server takes no interrupt_before/interrupt_after:"
                " set breakpoints in the app's RuntimeConfig the workers run",
            )
        named_id = named if named is not None else f"run-{uuid.uuid4()}"
        if self.authorize is not None:
            request = attrs.evolve(
                Request.from_scope(scope), session_id=named, graph=graph_name
            )
            exists = named is not None and await self._exists(named)
            await self._authorize(request, "resume" if exists else "start")
        try:
            run = await self.queue.submit(graph_name, named_id, state)
        except RunAlreadyActive as exc:
            raise HTTPError(409, str(exc)) from None
        except UnknownAppError as exc:
            raise HTTPError(503, str(exc)) from None
        except QueueError as exc:
            raise HTTPError(503, f"the run queue is unavailable: {exc}") from None
        await self._follow(receive, send, run, 0, owner=not detach)

    async def _follow(
        self, receive: Receive, send: Send, run: RunStatus, last: int, *, owner: bool
    ) -> None:
        """Stream ``run``'s logged events after ``last`` until its end or a
        disconnect; an owner that leaves early cancels the run."""
        headers = [
            *SSE_HEADERS,
            (b"x-weavegraph-session", run.session_id.encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await _chunk(send, b": connected\n\n")
        ended = False
        stream = trio.CancelScope()
        self._streams.add(stream)
        try:
            with stream:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_watch_disconnect, receive, nursery.cancel_scope)
                    events = self.queue.run_events(run.run_id, after=last)
                    while True:
                        with trio.move_on_after(self.keepalive) as idle:
                            try:
                                seq, event = await events.__anext__()
                            except StopAsyncIteration:
                                ended = True
                                break
                        if idle.cancelled_caught:
                            await _chunk(send, b": keep-alive\n\n")
                            continue
                        await _chunk(send, encode_sse(event, seq))
                    nursery.cancel_scope.cancel()
        finally:
            self._streams.discard(stream)
            if owner and not ended and not self.closing:
                with trio.CancelScope(shield=True), trio.move_on_after(10):
                    try:
                        await self.queue.cancel(
                            run.session_id, "the client that started the run left"
                        )
                    except QueueError as exc:
                        logger.error("cancelling %s: %s", run.session_id, exc)
        with trio.move_on_after(1):
            await send({"type": "http.response.body", "body": b"", "more_body": False})


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
