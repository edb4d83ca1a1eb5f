"""`RunQueue`: submit runs to PostgreSQL-backed workers, watch and cancel them.

A run is a row of ``weavegraph_runs``: its session, the app that runs it and
its input (a new session's state, a new turn's input, a `Resume`, or nothing
to continue what is stored). Any worker serving the app claims it, holds a
lease while it runs, and writes the session's steps to the same database's
checkpoint store and the run's events to ``weavegraph_run_events``.
"""

from __future__ import annotations

import collections
import datetime as _dt
import functools
from collections.abc import Iterable, Mapping
from contextlib import AsyncExitStack
from typing import Any, Literal

import attrs
import trio

from .._codec import converter, decode_value, dumps, encode_value, loads, state_to_json
from .._core.errors import (
    QueueError,
    RunAlreadyActive,
    RunCancelledError,
    RunFailedError,
    StateError,
    UnknownAppError,
)
from .._core.session import Resume, check_session_id
from .._core.state import VersionedState
from ..checkpoint import sql
from ..events.types import Event, event_from_json
from ._db import ENDS_CHANNEL, EVENTS_CHANNEL, QUEUE_CHANNEL, Database, Listener

Status = Literal["queued", "running", "completed", "interrupted", "failed", "cancelled"]
FINAL_STATUSES = frozenset({"completed", "interrupted", "failed", "cancelled"})
POLL = 1.0
"""Seconds between two reads of a run's row when no notification arrives."""

RunInput = VersionedState | Resume | None


# ------------------------------------------------------------------ the input


def encode_input(value: object) -> str:
    """The JSON text of a run's input.

    Raises:
        StateError: ``value`` is not a `VersionedState`, a `Resume` or ``None``,
            or holds a value that cannot be stored.
    """
    if value is None:
        doc: dict[str, Any] = {"kind": "none"}
    elif isinstance(value, VersionedState):
        doc = {"kind": "state", "state": state_to_json(value)}
    elif isinstance(value, Resume):
        doc = {
            "kind": "resume",
            "value": encode_value(value.value, "Resume.value"),
            "values": None
            if value.values is None
            else encode_value(dict(value.values), "Resume.values"),
        }
    else:
        raise StateError(
            "a queued run's input is a VersionedState (a new session or a new"
            " turn), a Resume (answers to interrupts) or None (continue what is"
            f" stored), got {type(value).__name__}"
        )
    return dumps(doc)


def decode_input(text: str) -> RunInput:
    """The input `encode_input` wrote.

    Raises:
        QueueError: the text is not an input weavegraph wrote.
    """
    try:
        doc = loads(text)
        kind = doc["kind"]
        if kind == "none":
            return None
        if kind == "state":
            return converter.structure(doc["state"], VersionedState)
        if kind == "resume":
            values = doc["values"]
            return Resume(
                decode_value(doc["value"]),
                values=None if values is None else decode_value(values),
            )
    except Exception as exc:
        raise QueueError(f"a queued run's input is unreadable: {exc}") from exc
    raise QueueError(f"a queued run's input has an unknown kind {kind!r}")


# ------------------------------------------------------------------ records


@attrs.frozen
class RunStatus:
    """One queued run, as its row says.

    Attributes:
        run_id: The run's number (increasing in submission order).
        session_id: Its session.
        app: The app name that runs it.
        status: ``queued``, ``running``, ``completed``, ``interrupted``
            (paused on an interrupt or a breakpoint), ``failed`` or
            ``cancelled``.
        attempts: How many times a worker claimed it (more than one: taken
            over or handed back).
        worker: The worker holding its lease (``None`` unless running).
        error: Why it failed (``None`` unless failed or cancelled).
        last_seq: Its newest event's number (0: none yet).
        cancel_requested: Whether somebody asked to cancel it.
        submitted_at, started_at, claimed_at, finished_at: When (UTC): it was
            submitted, first claimed, last claimed, and ended.
    """

    run_id: int
    session_id: str
    app: str
    status: Status
    attempts: int
    worker: str | None
    error: str | None
    last_seq: int
    cancel_requested: bool
    submitted_at: _dt.datetime
    started_at: _dt.datetime | None
    claimed_at: _dt.datetime | None
    finished_at: _dt.datetime | None

    @property
    def done(self) -> bool:
        """Whether the run reached a final status."""
        return self.status in FINAL_STATUSES


_STATUS_COLUMNS = (
    "id, session_id, app, status, attempts, worker, error, last_seq,"
    " cancel_requested, submitted_at, started_at, claimed_at, finished_at"
)


def _status(row: Any) -> RunStatus:
    return RunStatus(*row)


@attrs.frozen
class EventRetention:
    """How long a run's events are kept in ``weavegraph_run_events``.

    Attributes:
        max_events: Per run, the newest events kept (older ones are deleted as
            new ones are appended); ``None``: no bound.
        max_age: Seconds after which events are deleted (by the workers, about
            once a minute); ``None``: no bound.
    """

    max_events: int | None = 10_000
    max_age: float | None = 7 * 24 * 3600.0

    def __attrs_post_init__(self) -> None:
        if self.max_events is not None and (
            type(self.max_events) is not int or self.max_events < 1
        ):
            raise QueueError(
                f"max_events must be an int >= 1 or None, got {self.max_events!r}"
            )
        if self.max_age is not None and (
            not isinstance(self.max_age, int | float) or not self.max_age > 0
        ):
            raise QueueError(
                f"max_age must be a number of seconds > 0 or None, got {self.max_age!r}"
            )


class _Changes:
    """A broadcast wake-up: every waiter that took the current event wakes."""

    def __init__(self) -> None:
        self.event = trio.Event()

    def notify(self) -> None:
        old, self.event = self.event, trio.Event()
        old.set()


# ------------------------------------------------------------------ the queue


class RunQueue:
    """``async with RunQueue(dsn) as queue:`` — the run queue on a PostgreSQL
    database (the one a `PostgresCheckpointer` on ``dsn`` uses).

    The queue's tables are created or upgraded on open, beside the store's.
    ``apps`` names the apps runs may be submitted for; without it, the names
    the workers registered (each worker registers its apps when it starts).

    Args:
        dsn: A libpq connection string or URI.
        apps: App names (or a mapping of names to apps) that may be submitted.
        pool_size: Connections at most.
    """

    def __init__(
        self,
        dsn: str,
        *,
        apps: Iterable[str] | Mapping[str, object] | None = None,
        pool_size: int = 2,
    ) -> None:
        self._db = Database(dsn, pool_size=pool_size)
        if apps is not None:
            names = set(apps)
            for name in names:
                if not isinstance(name, str) or not name:
                    raise QueueError(f"app names are non-empty strings, got {name!r}")
            self._apps: frozenset[str] | None = frozenset(names)
        else:
            self._apps = None
        self._stack: AsyncExitStack | None = None
        self._runs = _Changes()
        self._events = _Changes()

    @property
    def dsn(self) -> str:
        """The database's connection string."""
        return self._db.dsn

    async def __aenter__(self) -> RunQueue:
        stack = AsyncExitStack()
        try:
            await self._db.open()
            stack.push_async_callback(self._db.aclose)
            nursery = await stack.enter_async_context(trio.open_nursery())
            stack.callback(nursery.cancel_scope.cancel)
            listener = Listener(
                self._db.dsn, (QUEUE_CHANNEL, ENDS_CHANNEL, EVENTS_CHANNEL)
            )
            await nursery.start(listener.run, self._on_notify)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    def _on_notify(self, channel: str, payload: str) -> None:
        if channel == EVENTS_CHANNEL:
            self._events.notify()
        else:
            self._runs.notify()

    def _check_open(self) -> None:
        if self._stack is None:
            raise QueueError("the RunQueue is not open: use 'async with RunQueue(dsn)'")

    async def submit(
        self, app_name: str, session_id: str, input: RunInput = None
    ) -> RunStatus:
        """Enqueue a run of ``session_id`` by the app ``app_name``.

        ``input`` is what ``App.invoke`` takes: for a new session its initial
        state, for a stored one a new turn's input (a `VersionedState`), the
        answers to its interrupts (a `Resume`), or ``None`` to continue what
        is stored.

        Raises:
            UnknownAppError: no such app (see ``apps``).
            InvalidSessionIdError: ``session_id`` breaks the session id rule.
            StateError: ``input`` is not an input, or cannot be stored.
            RunAlreadyActive: the session has a queued or running run; nothing
                was enqueued.
        """
        self._check_open()
        if not isinstance(app_name, str) or not app_name:
            raise UnknownAppError(
                f"the app name must be a non-empty string, got {app_name!r}"
            )
        check_session_id(session_id)
        text = encode_input(input)
        known = self._apps

        def unknown(names: list[str]) -> UnknownAppError:
            return UnknownAppError(
                f"unknown app {app_name!r}: "
                + (
                    f"the apps are {', '.join(names)}"
                    if names
                    else "no worker has registered an app yet (start a worker"
                    " first, or give RunQueue(apps=...))"
                )
            )

        def insert(conn: Any) -> Any:
            import psycopg

            if known is not None and app_name not in known:
                raise unknown(sorted(known))
            cur = conn.cursor()
            # One statement: the app check, the row, the workers' wake-up.
            registered = (
                "true"
                if known is not None
                else ("EXISTS (SELECT 1 FROM weavegraph_apps WHERE name = %(app)s)")
            )
            try:
                cur.execute(
                    "WITH queued AS (INSERT INTO weavegraph_runs"
                    " (session_id, app, input_json, status)"
                    " SELECT %(sid)s, %(app)s, %(input)s, 'queued'"
                    f" WHERE {registered} RETURNING {_STATUS_COLUMNS})"
                    " SELECT *, pg_notify(%(channel)s, 'run:' || id) FROM queued",
                    {
                        "sid": session_id,
                        "app": app_name,
                        "input": text,
                        "channel": QUEUE_CHANNEL,
                    },
                )
            except psycopg.errors.UniqueViolation:
                conn.rollback()
                cur.execute(
                    "SELECT status FROM weavegraph_runs WHERE session_id = %s"
                    " AND status IN ('queued', 'running')",
                    (session_id,),
                )
                found = cur.fetchone()
                conn.rollback()
                raise RunAlreadyActive(
                    session_id, "queued or running" if found is None else found[0]
                ) from None
            row = cur.fetchone()
            if row is None:
                conn.rollback()
                cur.execute("SELECT name FROM weavegraph_apps ORDER BY name")
                names = [r[0] for r in cur.fetchall()]
                conn.rollback()
                raise unknown(names)
            conn.commit()
            return row[:-1]

        return _status(await self._db.run(insert))

    async def status(self, session_id: str) -> RunStatus | None:
        """The session's latest run (``None``: none was submitted)."""
        self._check_open()
        check_session_id(session_id)
        return await self._db.run(lambda conn: _latest(conn, session_id))

    async def runs(self, session_id: str) -> list[RunStatus]:
        """Every run of the session, oldest first."""
        self._check_open()
        check_session_id(session_id)

        def read(conn: Any) -> list[RunStatus]:
            cur = conn.cursor()
            cur.execute(
                f"SELECT {_STATUS_COLUMNS} FROM weavegraph_runs WHERE session_id = %s"
                " ORDER BY id",
                (session_id,),
            )
            rows = cur.fetchall()
            conn.rollback()
            return [_status(r) for r in rows]

        return await self._db.run(read)

    async def _run_status(self, run_id: int) -> RunStatus:
        def read(conn: Any) -> RunStatus:
            cur = conn.cursor()
            cur.execute(
                f"SELECT {_STATUS_COLUMNS} FROM weavegraph_runs WHERE id = %s",
                (run_id,),
            )
            row = cur.fetchone()
            conn.rollback()
            if row is None:
                raise QueueError(f"run {run_id} is no longer in the queue")
            return _status(row)

        return await self._db.run(read)

    async def _latest_or_fail(self, session_id: str) -> RunStatus:
        found = await self.status(session_id)
        if found is None:
            raise QueueError(
                f"no run was submitted for session {session_id!r}: submit one first"
            )
        return found

    async def wait(self, session_id: str) -> VersionedState:
        """Wait for the session's latest run to end; return its final state.

        A run paused on an interrupt ends too: the state at the pause.

        Raises:
            QueueError: no run was submitted for the session.
            RunFailedError: the run failed.
            RunCancelledError: the run was cancelled.
        """
        run = await self._latest_or_fail(session_id)
        while not run.done:
            changed = self._runs.event
            with trio.move_on_after(POLL):
                await changed.wait()
            run = await self._run_status(run.run_id)
        if run.status == "failed":
            raise RunFailedError(session_id, run.error or "unknown error")
        if run.status == "cancelled":
            raise RunCancelledError(
                f"the run of session {session_id!r} was cancelled"
                + (f": {run.error}" if run.error else "")
            )
        stored = await self._db.run(
            lambda conn: sql.load_latest(conn, sql.POSTGRES, session_id)
        )
        if stored is None:
            raise QueueError(f"session {session_id!r} has no stored state")
        return stored.checkpoint.state

    async def cancel(self, session_id: str, reason: str = "cancelled") -> bool:
        """Cancel the session's queued or running run, wherever it runs.

        A queued run is cancelled at once; a running one stops on its worker
        within one lease renewal interval (sooner when the notification
        arrives). Whether there was a run to cancel.
        """
        self._check_open()
        check_session_id(session_id)
        return await self._db.run(lambda conn: cancel_runs(conn, session_id, reason))

    def events(
        self, session_id: str, *, after: int = 0, follow: bool = True
    ) -> RunEvents:
        """``async for seq, event in queue.events(session_id):`` — the events of
        the session's latest run after number ``after``, in order.

        With ``follow`` the iteration waits for new events until the run has
        ended and its last event was given; otherwise it stops at the newest.
        Events deleted by retention are skipped. Leaving the loop early is
        fine: nothing is left running.

        Raises:
            QueueError: (while iterating) no run was submitted for the session.
        """
        self._check_open()
        check_session_id(session_id)
        return RunEvents(self, session_id, None, after, follow)

    def run_events(
        self, run_id: int, *, after: int = 0, follow: bool = True
    ) -> RunEvents:
        """Like `events`, for one run by its number (`RunStatus.run_id`)."""
        self._check_open()
        return RunEvents(self, None, run_id, after, follow)


class RunEvents:
    """The events of one run as ``(seq, event)`` pairs (see `RunQueue.events`)."""

    def __init__(
        self,
        queue: RunQueue,
        session_id: str | None,
        run_id: int | None,
        after: int,
        follow: bool,
    ) -> None:
        if type(after) is not int or after < 0:
            raise QueueError(f"after must be an event number >= 0, got {after!r}")
        self._queue = queue
        self._session_id = session_id
        self.run_id = run_id
        self.cursor = after
        self._follow = follow
        self._buffer: collections.deque[tuple[int, Event]] = collections.deque()
        self._finished = False

    def __aiter__(self) -> RunEvents:
        return self

    async def __anext__(self) -> tuple[int, Event]:
        queue = self._queue
        if self.run_id is None:
            assert self._session_id is not None
            self.run_id = (await queue._latest_or_fail(self._session_id)).run_id
        while not self._buffer:
            if self._finished:
                raise StopAsyncIteration
            changed = queue._events.event
            batch, status = await queue._db.run(
                functools.partial(_read_events, run_id=self.run_id, after=self.cursor)
            )
            for seq, text in batch:
                self._buffer.append((seq, event_from_json(text)))
            if batch:
                self.cursor = batch[-1][0]
            if len(batch) == _EVENT_PAGE:
                continue
            if not self._follow or (status.done and self.cursor >= status.last_seq):
                self._finished = True
            elif not batch:
                with trio.move_on_after(POLL):
                    await changed.wait()
        return self._buffer.popleft()


_EVENT_PAGE = 500


def _latest(conn: Any, session_id: str) -> RunStatus | None:
    cur = conn.cursor()
    cur.execute(
        f"SELECT {_STATUS_COLUMNS} FROM weavegraph_runs WHERE session_id = %s"
        " ORDER BY id DESC LIMIT 1",
        (session_id,),
    )
    row = cur.fetchone()
    conn.rollback()
    return None if row is None else _status(row)


def _read_events(
    conn: Any, *, run_id: int, after: int
) -> tuple[list[tuple[int, str]], RunStatus]:
    cur = conn.cursor()
    # The run's row first: events appended before its final status are read.
    cur.execute(
        f"SELECT {_STATUS_COLUMNS} FROM weavegraph_runs WHERE id = %s", (run_id,)
    )
    row = cur.fetchone()
    if row is None:
        conn.rollback()
        raise QueueError(f"run {run_id} is no longer in the queue")
    cur.execute(
        "SELECT seq, event_json FROM weavegraph_run_events WHERE run_id = %s"
        " AND seq > %s ORDER BY seq LIMIT %s",
        (run_id, after, _EVENT_PAGE),
    )
    events = [(int(seq), str(text)) for seq, text in cur.fetchall()]
    conn.rollback()
    return events, _status(row)


def cancel_runs(conn: Any, session_id: str, reason: str) -> bool:
    """Cancel the session's active run (a queued one at once); whether one was."""
    cur = conn.cursor()
    cur.execute(
        "UPDATE weavegraph_runs SET cancel_requested = true,"
        " status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END,"
        " error = CASE WHEN status = 'queued' THEN %s ELSE error END,"
        " finished_at = CASE WHEN status = 'queued' THEN clock_timestamp()"
        " ELSE finished_at END"
        " WHERE session_id = %s AND status IN ('queued', 'running') RETURNING id",
        (reason, session_id),
    )
    row = cur.fetchone()
    if row is not None:
        cur.execute("SELECT pg_notify(%s, %s)", (QUEUE_CHANNEL, f"cancel:{row[0]}"))
    conn.commit()
    return row is not None
