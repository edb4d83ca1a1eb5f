"""`RunQueue`: submit runs to PostgreSQL-backed workers, watch and cancel them.

A run is a row of ``weavegraph_runs``: its session, the app that runs it and
its input (a new session's state, a new turn's input, a `Resume`, or nothing
to continue what is stored). Any worker serving the app claims it, holds a
lease while it runs, and writes the session's steps to the same database's
checkpoint store and the run's events to ``weavegraph_run_events``.

The queue's reads run in autocommit (each statement its own transaction: no
BEGIN and COMMIT to wait for, and no ROLLBACK, at which psycopg deallocates
every statement the connection prepared).
"""

from __future__ import annotations

import collections
import contextlib
import datetime as _dt
import functools
import math
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Literal

import attrs
import trio

from .._codec import converter, decode_value, dumps, encode_value, loads, state_to_json
from .._core.errors import (
    ConfigError,
    QueueError,
    RunAlreadyActive,
    RunCancelledError,
    RunFailedError,
    StateError,
    UnknownAppError,
)
from .._core.session import Resume, check_session_id
from .._core.state import VersionedState
from .._runtime.config import RuntimeConfig
from ..checkpoint import sql
from ..events.steps import StreamMode, check_modes, combine_modes
from ..events.types import Event, event_from_json, stream_end_event
from ._db import (
    ENDS_CHANNEL,
    EVENTS_CHANNEL,
    QUEUE_CHANNEL,
    UNWATCHED,
    Database,
    Listener,
    wake_app,
)

Status = Literal["queued", "running", "completed", "interrupted", "failed", "cancelled"]
FINAL_STATUSES = frozenset({"completed", "interrupted", "failed", "cancelled"})
POLL = 1.0
"""Seconds between two reads of a run's row when no notification arrives."""
WATCH_TTL = 6.0
"""Seconds a watcher's row lasts unless its server renews it (every third)."""
UNWATCHED_REASON = "no client is watching the run any more"

RunInput = VersionedState | Resume | None


# ------------------------------------------------------------------ the input


@attrs.frozen
class RunOptions:
    """How a queued run is run, besides its input: its breakpoints and the
    stream modes it publishes (``None``: the app's own)."""

    interrupt_before: tuple[str, ...] | None = None
    interrupt_after: tuple[str, ...] | None = None
    modes: tuple[StreamMode, ...] | None = None

    def configure(self, config: RuntimeConfig) -> RuntimeConfig:
        """``config`` with these options applied."""
        changes: dict[str, Any] = {}
        if self.interrupt_before is not None:
            changes["interrupt_before"] = self.interrupt_before
        if self.interrupt_after is not None:
            changes["interrupt_after"] = self.interrupt_after
        if self.modes is not None:
            changes["stream_modes"] = combine_modes(config.stream_modes, self.modes)
        return attrs.evolve(config, **changes) if changes else config


def _node_names(value: object, what: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if value == "*":
        return ("*",)
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigError(f"{what} must be node names (or '*'), got {value!r}")
    names = tuple(value)
    if not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"{what} must be node names (or '*'), got {value!r}")
    return names


def encode_input(value: object, options: RunOptions | None = None) -> str:
    """The JSON text of a run's input (and its options).

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
    if options is not None and options != RunOptions():
        doc["options"] = converter.unstructure(options)
    return dumps(doc)


def decode_input(text: str) -> tuple[RunInput, RunOptions]:
    """The input and options `encode_input` wrote.

    Raises:
        QueueError: the text is not an input weavegraph wrote.
    """
    try:
        doc = loads(text)
        kind = doc["kind"]
        options = (
            converter.structure(doc["options"], RunOptions)
            if "options" in doc
            else RunOptions()
        )
        if kind == "none":
            return None, options
        if kind == "state":
            return converter.structure(doc["state"], VersionedState), options
        if kind == "resume":
            values = doc["values"]
            resume = Resume(
                decode_value(doc["value"]),
                values=None if values is None else decode_value(values),
            )
            return resume, options
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
        watched: Whether its watchers own it (it is cancelled once none has
            watched it for its grace).
        watchers: Clients streaming it now (only from `RunQueue.list_runs`).
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
    watched: bool = False
    watchers: int | None = None

    @property
    def done(self) -> bool:
        """Whether the run reached a final status."""
        return self.status in FINAL_STATUSES


_STATUS_COLUMNS = (
    "id, session_id, app, status, attempts, worker, error, last_seq,"
    " cancel_requested, submitted_at, started_at, claimed_at, finished_at,"
    " watch_grace IS NOT NULL"
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


@attrs.define
class Watch:
    """One watcher of a run (from `RunQueue.watch`).

    Attributes:
        linger: Leave the watcher's row to expire by itself on leaving,
            rather than expiring it at once and checking for cancellation.
    """

    linger: bool = False


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
        elif channel == ENDS_CHANNEL:  # a run's end event is logged with its end
            self._runs.notify()
            self._events.notify()
        else:
            self._runs.notify()

    def _check_open(self) -> None:
        if self._stack is None:
            raise QueueError("the RunQueue is not open: use 'async with RunQueue(dsn)'")

    async def submit(
        self,
        app_name: str,
        session_id: str,
        input: RunInput = None,
        *,
        interrupt_before: Iterable[str] | None = None,
        interrupt_after: Iterable[str] | None = None,
        modes: Iterable[StreamMode] | None = None,
        watcher: str | None = None,
        grace: float = 0.0,
    ) -> RunStatus:
        """Enqueue a run of ``session_id`` by the app ``app_name``.

        ``input`` is what ``App.invoke`` takes: for a new session its initial
        state, for a stored one a new turn's input (a `VersionedState`), the
        answers to its interrupts (a `Resume`), or ``None`` to continue what
        is stored.

        Args:
            app_name: The app, by the name the workers serve it under.
            session_id: The session to run.
            input: The run's input.
            interrupt_before: Breakpoints for this run (node names or
                ``"*"``), instead of the app's ``RuntimeConfig``'s.
            interrupt_after: Likewise, after the named nodes ran.
            modes: Stream modes the run publishes besides the app's own
                (``"updates"``, ``"values"``).
            watcher: Make the run owned by its watchers, ``watcher`` the first
                (attached in the same transaction; renew it with `watch`): the
                run is cancelled once no watcher has watched it for ``grace``
                seconds. ``None``: nobody's departure cancels it.
            grace: See ``watcher``.

        Raises:
            UnknownAppError: no such app (see ``apps``).
            InvalidSessionIdError: ``session_id`` breaks the session id rule.
            StateError: ``input`` is not an input, or cannot be stored.
            ConfigError: bad breakpoints, modes, watcher or grace.
            RunAlreadyActive: the session has a queued or running run; nothing
                was enqueued.
        """
        self._check_open()
        if not isinstance(app_name, str) or not app_name:
            raise UnknownAppError(
                f"the app name must be a non-empty string, got {app_name!r}"
            )
        check_session_id(session_id)
        options = RunOptions(
            _node_names(interrupt_before, "interrupt_before"),
            _node_names(interrupt_after, "interrupt_after"),
            None if modes is None else check_modes(tuple(modes)),
        )
        if watcher is not None and (not isinstance(watcher, str) or not watcher):
            raise ConfigError(f"watcher must be a non-empty string, got {watcher!r}")
        if isinstance(grace, bool) or not isinstance(grace, int | float):
            raise ConfigError(f"grace must be a number of seconds >= 0, got {grace!r}")
        if not 0 <= grace < math.inf:
            raise ConfigError(f"grace must be a number of seconds >= 0, got {grace!r}")
        text = encode_input(input, options)
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
                    " (session_id, app, input_json, status, watch_grace)"
                    " SELECT %(sid)s, %(app)s, %(input)s, 'queued', %(grace)s"
                    f" WHERE {registered} RETURNING {_STATUS_COLUMNS}),"
                    " watching AS (INSERT INTO weavegraph_run_watchers"
                    " (run_id, watcher, expires) SELECT id, %(watcher)s,"
                    " clock_timestamp() + make_interval(secs => %(ttl)s)"
                    " FROM queued WHERE %(watcher)s::text IS NOT NULL)"
                    " SELECT *, pg_notify(%(channel)s, 'run:' || id || ':' || %(wake)s)"
                    " FROM queued",
                    {
                        "sid": session_id,
                        "app": app_name,
                        "input": text,
                        "grace": None if watcher is None else float(grace),
                        "watcher": watcher,
                        "ttl": WATCH_TTL,
                        "channel": QUEUE_CHANNEL,
                        "wake": wake_app(app_name),
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
        return await self._db.run(
            lambda conn: _latest(conn, session_id), autocommit=True
        )

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
            return [_status(r) for r in cur.fetchall()]

        return await self._db.run(read, autocommit=True)

    async def list_runs(
        self, *, limit: int = 100, active: bool = False
    ) -> list[RunStatus]:
        """The newest runs of every session, newest first, each with its
        `RunStatus.watchers`; ``active``: only queued and running ones."""
        self._check_open()
        if type(limit) is not int or not 1 <= limit <= 10_000:
            raise QueueError(f"limit must be an int from 1 to 10000, got {limit!r}")

        def read(conn: Any) -> list[RunStatus]:
            cur = conn.cursor()
            cur.execute(
                f"SELECT {_STATUS_COLUMNS}, (SELECT count(*) FROM"
                " weavegraph_run_watchers AS w WHERE w.run_id = r.id"
                " AND w.expires > clock_timestamp())"
                " FROM weavegraph_runs AS r"
                + (" WHERE status IN ('queued', 'running')" if active else "")
                + " ORDER BY id DESC LIMIT %s",
                (limit,),
            )
            return [_status(r) for r in cur.fetchall()]

        return await self._db.run(read, autocommit=True)

    @asynccontextmanager
    async def watch(
        self, run_id: int, watcher: str, *, grace: float = 0.0
    ) -> AsyncIterator[Watch]:
        """``async with queue.watch(run_id, watcher):`` — ``watcher`` watches
        the run while the block runs: its row is renewed every third of
        `WATCH_TTL`. On leaving, the row expires; then, after ``grace``
        seconds, a run its watchers own that nobody watches any more is
        cancelled (its worker's lease renewal checks the same, so a server
        that died cancels its clients' runs too). Set the given `Watch`'s
        ``linger`` to leave the row to expire by itself instead (a server
        shutting down: its clients may re-attach elsewhere meanwhile)."""
        self._check_open()
        if not isinstance(watcher, str) or not watcher:
            raise ConfigError(f"watcher must be a non-empty string, got {watcher!r}")
        handle = Watch()

        def attach(conn: Any) -> None:
            cur = conn.cursor()
            cur.execute(
                "INSERT INTO weavegraph_run_watchers (run_id, watcher, expires)"
                " SELECT id, %(w)s, clock_timestamp() + make_interval(secs => %(t)s)"
                " FROM weavegraph_runs WHERE id = %(id)s"
                " AND status IN ('queued', 'running')"
                " ON CONFLICT (run_id, watcher)"
                " DO UPDATE SET expires = EXCLUDED.expires",
                {"w": watcher, "t": WATCH_TTL, "id": run_id},
            )
            conn.commit()

        def leave(conn: Any) -> None:
            cur = conn.cursor()
            cur.execute(
                "UPDATE weavegraph_run_watchers SET expires = clock_timestamp()"
                " WHERE run_id = %s AND watcher = %s",
                (run_id, watcher),
            )
            conn.commit()

        async def renew() -> None:
            while True:
                await trio.sleep(WATCH_TTL / 3)
                # On an error the next renewal tries again; the row lasts a TTL.
                with contextlib.suppress(QueueError):
                    await self._db.run(attach)

        await self._db.run(attach)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(renew)
                try:
                    yield handle
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            if not handle.linger:
                with trio.CancelScope(shield=True), trio.move_on_after(10 + grace):
                    await self._db.run(leave)
                    if grace > 0:
                        await trio.sleep(grace)
                    await self._db.run(
                        functools.partial(
                            cancel_runs,
                            where="r.id = %(key)s AND " + UNWATCHED,
                            key=run_id,
                            reason=UNWATCHED_REASON,
                        )
                    )

    async def _run_status(self, run_id: int) -> RunStatus:
        def read(conn: Any) -> RunStatus:
            cur = conn.cursor()
            cur.execute(
                f"SELECT {_STATUS_COLUMNS} FROM weavegraph_runs WHERE id = %s",
                (run_id,),
            )
            row = cur.fetchone()
            if row is None:
                raise QueueError(f"run {run_id} is no longer in the queue")
            return _status(row)

        return await self._db.run(read, autocommit=True)

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
        return await self._db.run(
            lambda conn: cancel_runs(conn, "r.session_id = %(key)s", session_id, reason)
        )

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
                functools.partial(_read_events, run_id=self.run_id, after=self.cursor),
                autocommit=True,
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
    return None if row is None else _status(row)


def _read_events(
    conn: Any, *, run_id: int, after: int
) -> tuple[list[tuple[int, str]], RunStatus]:
    """The run's status and its events after ``after`` (run in autocommit: the
    second statement sees everything committed before it)."""
    cur = conn.cursor()
    # The run's row first: events appended before its final status are read.
    cur.execute(
        f"SELECT {_STATUS_COLUMNS} FROM weavegraph_runs WHERE id = %s", (run_id,)
    )
    row = cur.fetchone()
    if row is None:
        raise QueueError(f"run {run_id} is no longer in the queue")
    cur.execute(
        "SELECT seq, event_json FROM weavegraph_run_events WHERE run_id = %s"
        " AND seq > %s ORDER BY seq LIMIT %s",
        (run_id, after, _EVENT_PAGE),
    )
    events = [(int(seq), str(text)) for seq, text in cur.fetchall()]
    return events, _status(row)


def cancel_runs(conn: Any, where: str, key: object, reason: str) -> bool:
    """Cancel the queued or running run ``r`` of ``where`` (SQL over
    ``%(key)s``); whether there was one.

    A running run is cancelled by its worker, told with a NOTIFY. A queued
    one is cancelled here, its stream-end event appended in the same
    transaction, so its log ends like every run's."""
    cur = conn.cursor()
    cur.execute(
        "SELECT r.id, r.status, r.session_id, r.last_seq, coalesce((SELECT"
        " last_step FROM sessions WHERE sessions.id = r.session_id), -1)"
        f" FROM weavegraph_runs AS r WHERE {where}"
        " AND r.status IN ('queued', 'running') FOR UPDATE OF r",
        {"key": key},
    )
    row = cur.fetchone()
    if row is None:
        conn.commit()
        return False
    run_id, status, session_id, last_seq, step = row
    if status == "queued":
        end = stream_end_event(session_id, "cancelled", step, reason)
        cur.execute(
            "UPDATE weavegraph_runs SET cancel_requested = true,"
            " status = 'cancelled', error = %s, finished_at = clock_timestamp(),"
            " last_seq = %s WHERE id = %s",
            (reason, last_seq + 1, run_id),
        )
        cur.execute(
            "INSERT INTO weavegraph_run_events (run_id, seq, event_json)"
            " VALUES (%s, %s, %s)",
            (run_id, last_seq + 1, end.to_json_str()),
        )
        cur.execute(
            "SELECT pg_notify(%s, %s), pg_notify(%s, 'end')",
            (ENDS_CHANNEL, f"done:{run_id}", EVENTS_CHANNEL),
        )
    else:
        # The reason waits in ``error`` for the worker, which records the end.
        cur.execute(
            "UPDATE weavegraph_runs SET cancel_requested = true, error = %s"
            " WHERE id = %s",
            (reason, run_id),
        )
        cur.execute("SELECT pg_notify(%s, %s)", (QUEUE_CHANNEL, f"cancel:{run_id}"))
    conn.commit()
    return True
