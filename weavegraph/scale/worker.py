"""`serve_worker`: claim queued runs from PostgreSQL and run them, under leases.

A worker claims runs with ``SELECT … FOR UPDATE SKIP LOCKED`` (several workers
never claim one run), takes a lease on each (a fresh token from a sequence and
an expiry time on the database's clock) and renews it every third of the lease
while the run goes on. Each run executes under the ordinary runner with
autosave, its checkpointer a `PostgresCheckpointer` whose every write first
checks the lease in the same transaction: once the lease expired or another
worker took the run, this worker can commit no step and no event any more, and
it abandons the run. A run whose lease expired is claimed again by any worker,
which resumes the session from its last committed step (pending writes
included).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import trio

from .._core.errors import ConfigError, LeaseLost, QueueError
from .._runtime.app import App
from ..checkpoint.postgres import PostgresCheckpointer
from ..checkpoint.record import Checkpoint
from ..events.types import Event, stream_end_event
from ._db import (
    ENDS_CHANNEL,
    EVENTS_CHANNEL,
    QUEUE_CHANNEL,
    UNWATCHED,
    Database,
    Listener,
    wake_app,
)
from .queue import UNWATCHED_REASON, EventRetention, RunInput, decode_input

logger = logging.getLogger("weavegraph.worker")

DEFAULT_LEASE = 10.0
MAX_ATTEMPTS = 5
"""Claims of one run after which it is failed rather than tried again."""
_EVENT_TRIES = 5  # writes of one event batch over broken connections
NOTIFY_EVERY = 0.025
"""Seconds between a worker's event wake-ups (`EventWriter`): a batch after a
quiet spell NOTIFYs at once, the batches of a busy spell share one NOTIFY at
most this often (PostgreSQL serializes the commits that notify and signals
every listening connection for each)."""


@attrs.frozen
class Claim:
    """A run this worker claimed, as the claim returned it."""

    run_id: int
    session_id: str
    app: str
    input_json: str
    attempts: int
    base_step: int
    now_step: int
    token: int
    last_seq: int
    cancel_requested: bool

    @property
    def input_applied(self) -> bool:
        """Whether an earlier owner already stored the input's first step."""
        return self.now_step > self.base_step


def check_lease(conn: Any, run_id: int, token: int, session_id: str) -> None:
    """In the caller's transaction: refuse unless ``token`` holds the run's
    live lease; the run's row stays key-share-locked until the transaction
    ends, so no claim (``FOR UPDATE``) can take the run between this check and
    the commit, while the run's own updates (its event numbers, its renewals)
    do not wait for it.

    Raises:
        LeaseLost: the lease expired or another worker holds the run.
    """
    cur = conn.cursor()
    cur.execute(
        "SELECT 1 FROM weavegraph_runs WHERE id = %s AND lease_token = %s"
        " AND status = 'running' AND lease_expires > clock_timestamp()"
        " FOR KEY SHARE",
        (run_id, token),
    )
    if cur.fetchone() is None:
        conn.rollback()
        raise LeaseLost(session_id, run_id)


class LeasedCheckpointer(PostgresCheckpointer):
    """The store of one claimed run: a `PostgresCheckpointer` on the worker's
    pool whose ``fence`` checks the run's lease in every write's transaction.

    Reads are not fenced; writes raise `LeaseLost` once the lease is gone.
    Closing it leaves the worker's pool open.
    """

    def __init__(self, db: Database, claim: Claim) -> None:
        super().__init__(
            db.dsn,
            pool_size=db.pool_size,
            fence=functools.partial(
                check_lease,
                run_id=claim.run_id,
                token=claim.token,
                session_id=claim.session_id,
            ),
            pool=db.pool,
            limiter=db.limiter,
        )
        self._claim = claim
        # The claim read the session's last step in its own transaction.
        self._fresh = claim.now_step == -1

    def __repr__(self) -> str:
        return f"LeasedCheckpointer(run={self._claim.run_id})"

    async def load_latest(self, session_id: str) -> Checkpoint | None:
        """As `PostgresCheckpointer.load_latest`; the first load of a session
        the claim found absent reads nothing (it cannot have appeared through
        the queue since: a session made meanwhile by a writer outside the queue
        makes the run's first write conflict, never merge)."""
        if self._fresh and session_id == self._claim.session_id:
            self._fresh = False
            await trio.lowlevel.checkpoint()
            return None
        return await super().load_latest(session_id)


class EventLog:
    """The event sink of one claimed run: its events wait here until the
    worker's `EventWriter` appends them to ``weavegraph_run_events``.

    A run that ends keeps its last events and its stream-end event (`end`)
    aside: the worker appends them in the transaction that records the run's
    final status (`take_tail`), so a run's log holds its end event exactly
    when the run is recorded as ended, once, whatever the timing of a lease
    loss, and the end waits for no batch of its own. Once the lease is lost
    nothing more is appended; a run handed back drops its ``cancelled``
    sentinel (the run goes on elsewhere) and has its events written first
    (`flush`).
    """

    def __init__(self, writer: EventWriter, claim: Claim) -> None:
        self._writer = writer
        self.claim = claim
        self.seq = claim.last_seq
        self.lost = False
        self.drop_end = False
        self.end: Event | None = None
        self.buffer: list[str] = []
        self._pending = 0  # handed over (buffered or in a batch), not settled
        self._settled = trio.Event()

    async def handle(self, event: Event) -> None:
        """As `handle_nowait` (the bus calls that one)."""
        self.handle_nowait(event)
        await trio.lowlevel.checkpoint()

    def handle_nowait(self, event: Event) -> None:
        """Queue one event for the worker's next batch."""
        if self.lost:
            return
        if event.is_stream_end:
            if not self.drop_end:
                self.end = event
            return
        self.buffer.append(event.to_json_str())
        self._pending += 1
        self._writer.mark(self)

    def settled(self, count: int, stored: bool) -> None:
        """``count`` events were written (``stored``) or given up."""
        if stored:
            self.seq += count
        self._pending -= count
        if self._pending <= 0 or self.lost:
            self._pending = 0
            self.buffer.clear()
        self._settled.set()
        self._settled = trio.Event()

    async def _wait_until(self, done: Any) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(10.0):
            while not done() and not self.lost:
                await self._settled.wait()

    async def flush(self) -> None:
        """Wait (at most 10 s, shielded) until every event handed over is written."""
        await self._wait_until(lambda: self._pending <= 0)

    async def take_tail(self) -> list[str]:
        """Wait (at most 10 s, shielded) for this run's batch in flight, then
        take the events still buffered: the caller writes them."""
        await self._wait_until(lambda: self._pending <= len(self.buffer))
        self._writer.forget(self)
        texts, self.buffer = self.buffer, []
        self._pending = 0
        return texts

    async def aclose(self) -> None:
        """Nothing to wait for: the worker writes the rest as the run ends."""
        await trio.lowlevel.checkpoint()


class EventWriter:
    """Appends the events of all of a worker's runs, a batch per transaction.

    Whatever the runs logged while the last batch was being written goes in
    the next: a busy worker writes many runs' events at once. Each batch checks
    every run's lease (``FOR KEY SHARE``, in the same transaction), appends the
    events of the runs still held, moves their ``last_seq`` and trims them to
    the retention's count. The wake-up is coalesced: a batch NOTIFYs when the
    last wake-up is `NOTIFY_EVERY` old (or it holds the first events of the
    one run the worker runs), else the next batch or a NOTIFY of its own at
    that time does (so a stream hears of every batch within that time).
    Runs' ends are coalesced the same way on the ends' channel (`end_wakes`):
    an end's transaction NOTIFYs when the last end wake-up is `NOTIFY_EVERY`
    old, else the next one does, at most that much later (every NOTIFY wakes
    every listening connection of the database, so a NOTIFY per run's end cost
    each worker and server a wake-up per run).
    """

    def __init__(
        self,
        db: Database,
        retention: EventRetention,
        running: Callable[[], int],
    ) -> None:
        self._db = db
        self._running = running  # how many runs the worker runs
        self._keep = retention.max_events
        self._dirty: dict[int, EventLog] = {}
        self._wake = trio.Event()
        self._notified_at = -math.inf  # trio clock of the last wake-up sent
        self._owed = False  # a batch was written that no wake-up announced
        self._ended_at = -math.inf  # likewise for runs' ends
        self._ends_owed = False

    def mark(self, log: EventLog) -> None:
        """``log`` has events to write."""
        self._dirty[log.claim.run_id] = log
        self._wake.set()

    def forget(self, log: EventLog) -> None:
        """``log``'s run writes its remaining events itself."""
        self._dirty.pop(log.claim.run_id, None)

    def end_wakes(self) -> bool:
        """Whether the run's end about to be written NOTIFYs itself; if not,
        the writer owes the ends' channel a wake-up, sent within
        `NOTIFY_EVERY`."""
        now = trio.current_time()
        if now >= self._ended_at + NOTIFY_EVERY:
            self._ended_at, self._ends_owed = now, False
            return True
        self.owe_end()
        return False

    def owe_end(self) -> None:
        """A run's end was (or may have been) written without a wake-up."""
        self._ends_owed = True
        self._wake.set()

    async def send_owed(self) -> None:
        """Send the wake-up owed, if any (a worker stopping does)."""
        if self._owed or self._ends_owed:
            await self._notify_owed()

    async def run(self) -> None:
        """Write batches until cancelled.

        A batch whose connection broke is tried again (a few times, a moment
        apart): the pool replaces the connection, and the events keep their
        order and numbers.
        """
        while True:
            if self._owed or self._ends_owed:
                due = (
                    min(
                        self._notified_at if self._owed else math.inf,
                        self._ended_at if self._ends_owed else math.inf,
                    )
                    + NOTIFY_EVERY
                )
                with trio.move_on_at(due):
                    await self._wake.wait()
                if not self._dirty:
                    if trio.current_time() < due:  # an end's poke: wait it out
                        self._wake = trio.Event()
                        continue
                    await self._notify_owed()  # quiet since: announce it all
                    continue
            else:
                await self._wake.wait()
            self._wake = trio.Event()
            tries = 0
            while self._dirty:
                logs = list(self._dirty.values())
                self._dirty.clear()
                batch = [(log, log.seq + 1, log.buffer) for log in logs]
                for log in logs:
                    log.buffer = []
                now = trio.current_time()
                # The first events of a run the worker runs alone are announced
                # at once (the time to a run's first event is what its submitter
                # waits for; a busy worker's wake-ups come often anyway).
                notify = now >= self._notified_at + NOTIFY_EVERY or (
                    self._running() <= 1
                    and any(first == log.claim.last_seq + 1 for log, first, _ in batch)
                )
                ends = self._ends_owed and now >= self._ended_at + NOTIFY_EVERY
                if notify:  # taken now, before the batch is written
                    self._notified_at = now
                if ends:  # (ends after this are owed again)
                    self._ended_at, self._ends_owed = now, False
                try:
                    live = await self._db.run(
                        functools.partial(
                            self._append, batch=batch, notify=notify, ends=ends
                        ),
                        autocommit=True,
                    )
                except QueueError as exc:
                    self._ends_owed = self._ends_owed or ends
                    self._owed = self._owed or notify
                    tries += 1
                    if _connection_lost(exc) and tries <= _EVENT_TRIES:
                        for log, _, texts in batch:
                            log.buffer[:0] = texts  # in front of newer ones
                            self._dirty.setdefault(log.claim.run_id, log)
                        await trio.sleep(0.1 * tries)
                        continue
                    logger.error("events of %d run(s) lost: %s", len(batch), exc)
                    for log, _, texts in batch:
                        log.settled(len(texts), False)
                    continue
                tries = 0
                if notify:
                    self._owed = False
                else:
                    self._owed = True
                for log, _, texts in batch:
                    if log.claim.run_id not in live:
                        log.lost = True
                    log.settled(len(texts), log.claim.run_id in live)

    async def _notify_owed(self) -> None:
        batches, ends = self._owed, self._ends_owed

        def notify(conn: Any) -> None:
            conn.execute(
                "SELECT CASE WHEN %s THEN pg_notify(%s, 'batch') END,"
                " CASE WHEN %s THEN pg_notify(%s, 'done') END",
                (batches, EVENTS_CHANNEL, ends, ENDS_CHANNEL),
            )

        now = trio.current_time()
        if batches:
            self._notified_at, self._owed = now, False
        if ends:
            self._ended_at, self._ends_owed = now, False
        try:
            await self._db.run(notify, autocommit=True)
        except QueueError as exc:  # the streams' polling still finds the batch
            logger.warning("an event wake-up was not sent: %s", exc)

    def _append(
        self,
        conn: Any,
        *,
        batch: list[tuple[EventLog, int, list[str]]],
        notify: bool,
        ends: bool,
    ) -> set[int]:
        # One statement, its own transaction (autocommit): the leases checked
        # (the runs still held stay key-share-locked to its end), their events
        # appended, their newest numbers moved, what the retention's count
        # leaves out trimmed, the wake-up sent if it is this batch's to send.
        # The arrays go in binary: each event's JSON is stored as it is, never
        # parsed or escaped.
        claims = sorted((log.claim for log, _, _ in batch), key=lambda c: c.run_id)
        ids: list[int] = []
        seqs: list[int] = []
        texts: list[str] = []
        lasts: dict[int, int] = {}
        keep = self._keep
        for log, first, items in batch:
            if not items:
                continue
            last = first + len(items) - 1
            lasts[log.claim.run_id] = last
            # Events the count would trim at once are numbered, not stored.
            skip = max(0, last - keep - first + 1) if keep else 0
            ids += [log.claim.run_id] * (len(items) - skip)
            seqs += range(first + skip, last + 1)
            texts += items[skip:]
        cuts = {i: last - keep for i, last in lasts.items() if keep and last > keep}
        trim = (
            ", trimmed AS (DELETE FROM weavegraph_run_events AS e"
            " USING unnest(%b::bigint[], %b::bigint[]) AS v(id, cut)"
            " WHERE e.run_id = v.id AND e.seq <= v.cut"
            " AND v.id IN (SELECT id FROM live))"
            if cuts
            else ""
        )
        cur = conn.cursor()
        cur.execute(
            "WITH live AS (SELECT id FROM weavegraph_runs WHERE (id, lease_token)"
            " IN (SELECT * FROM unnest(%b::bigint[], %b::bigint[]))"
            " AND status = 'running' AND lease_expires > clock_timestamp()"
            " ORDER BY id FOR KEY SHARE),"
            " added AS (INSERT INTO weavegraph_run_events (run_id, seq, event_json)"
            " SELECT e.* FROM unnest(%b::bigint[], %b::bigint[], %b::text[])"
            " AS e(run_id, seq, event_json) WHERE e.run_id IN (SELECT id FROM live)),"
            " moved AS (UPDATE weavegraph_runs AS r SET last_seq = v.last"
            " FROM unnest(%b::bigint[], %b::bigint[]) AS v(id, last)"
            " WHERE r.id = v.id AND v.id IN (SELECT id FROM live))"
            + trim
            + " SELECT ARRAY(SELECT id FROM live), CASE WHEN %s AND EXISTS (SELECT"
            " FROM live) THEN pg_notify(%s, 'batch') END,"
            " CASE WHEN %s THEN pg_notify(%s, 'done') END",
            (
                [c.run_id for c in claims],
                [c.token for c in claims],
                ids,
                seqs,
                texts,
                list(lasts),
                list(lasts.values()),
                *((list(cuts), list(cuts.values())) if cuts else ()),
                notify and bool(lasts),
                EVENTS_CHANNEL,
                ends,
                ENDS_CHANNEL,
            ),
        )
        row = cur.fetchone()
        return {int(i) for i in row[0]}


@attrs.define
class _Running:
    claim: Claim
    log: EventLog
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    poke: trio.Event = attrs.field(factory=trio.Event)
    lost: bool = False
    cancelled: bool = False
    cancel_reason: str = "cancelled through the queue"
    handing_back: bool = False

    def hand_back(self) -> None:
        if not self.handing_back:
            self.handing_back = True
            self.log.drop_end = True
            self.scope.cancel()


class Worker:
    """A running worker (given by `serve_worker`'s ``task_status``).

    Attributes:
        name: How the worker names itself in the queue (``worker`` column).
    """

    def __init__(
        self,
        apps: Mapping[str, App],
        db: Database,
        *,
        concurrency: int,
        lease: float,
        poll: float,
        name: str,
        retention: EventRetention,
    ) -> None:
        self.apps = dict(apps)
        self.name = name
        self._db = db
        self._concurrency = concurrency
        self._lease = lease
        self._poll = poll
        self._retention = retention
        self._running: dict[int, _Running] = {}
        self._events = EventWriter(db, retention, lambda: len(self._running))
        self._nursery: trio.Nursery | None = None
        self._wake = trio.Event()
        self._stopping = False
        self._stopped = trio.Event()
        self.completed = 0
        """Runs this worker brought to a final status."""

    @property
    def running(self) -> list[str]:
        """The sessions this worker runs now."""
        return [r.claim.session_id for r in self._running.values()]

    def stop(self) -> None:
        """Stop claiming and hand every run back to the queue: each is
        cancelled, its finished steps and pending writes are stored, and it is
        queued again for any worker. `serve_worker` then returns."""
        self._stopping = True
        for run in list(self._running.values()):
            run.hand_back()
        self._wake.set()

    def _on_notify(self, channel: str, payload: str) -> None:
        kind, _, ident = payload.partition(":")
        if kind == "cancel" and ident.isdigit():
            run = self._running.get(int(ident))
            if run is not None:
                run.poke.set()
        elif kind == "run" and len(self._running) < self._concurrency:
            # (a full worker claims again as each of its runs ends)
            app = ident.partition(":")[2]
            if not app or app in self.apps:  # another app's run: not for us
                self._wake.set()

    async def serve(self, task_status: trio.TaskStatus[Worker]) -> None:
        await self._db.open()
        try:
            await self._db.run(self._register)
            async with trio.open_nursery() as nursery:
                listener = Listener(self._db.dsn, (QUEUE_CHANNEL,))
                await nursery.start(listener.run, self._on_notify)
                nursery.start_soon(self._retain)
                nursery.start_soon(self._events.run)
                task_status.started(self)
                try:
                    await self._claim_loop(nursery)
                finally:
                    self.stop()
                    with trio.CancelScope(shield=True):
                        while self._running:
                            await self._stopped.wait()
                            self._stopped = trio.Event()
                        with trio.move_on_after(5.0):
                            await self._events.send_owed()
                    nursery.cancel_scope.cancel()
        finally:
            await self._db.aclose()

    def _register(self, conn: Any) -> None:
        cur = conn.cursor()
        for name, app in sorted(self.apps.items()):
            cur.execute(
                "INSERT INTO weavegraph_apps (name, graph_hash) VALUES (%s, %s)"
                " ON CONFLICT (name) DO UPDATE SET graph_hash = EXCLUDED.graph_hash,"
                " updated_at = clock_timestamp()",
                (name, app.graph.graph_hash),
            )
        conn.commit()

    def _start(self, claims: list[Claim]) -> None:
        for claim in claims:
            run = _Running(claim, EventLog(self._events, claim))
            self._running[claim.run_id] = run
            assert self._nursery is not None
            self._nursery.start_soon(self._guarded, run)

    async def _claim_loop(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        while not self._stopping:
            free = self._concurrency - len(self._running)
            claims: list[Claim] = []
            if free > 0:
                try:
                    claims = await self._db.run(
                        functools.partial(self._claim, limit=free), autocommit=True
                    )
                except QueueError as exc:
                    logger.error("claiming runs failed: %s", exc)
                self._start(claims)
            if claims and len(claims) == free:
                continue  # full: wait for a slot below on the next pass
            wake = self._wake
            with trio.move_on_after(self._poll):
                await wake.wait()
            if wake is self._wake:
                self._wake = trio.Event()

    def _claim(self, conn: Any, limit: int) -> list[Claim]:
        return self._claim_rows(conn.cursor(), limit)  # autocommit: one statement

    def _claim_rows(self, cur: Any, limit: int) -> list[Claim]:
        cur.execute(
            "WITH picked AS (SELECT id FROM weavegraph_runs WHERE app = ANY(%s)"
            " AND (status = 'queued' OR (status = 'running'"
            " AND lease_expires < clock_timestamp()))"
            " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)"
            " UPDATE weavegraph_runs AS r SET status = 'running', worker = %s,"
            " lease_token = nextval('weavegraph_lease_tokens'),"
            " lease_expires = clock_timestamp() + make_interval(secs => %s),"
            " attempts = r.attempts + 1,"
            " started_at = coalesce(r.started_at, clock_timestamp()),"
            " claimed_at = clock_timestamp(),"
            " base_step = CASE WHEN r.attempts = 0 THEN coalesce((SELECT last_step"
            " FROM sessions WHERE sessions.id = r.session_id), -1) ELSE r.base_step END"
            " FROM picked WHERE r.id = picked.id"
            " RETURNING r.id, r.session_id, r.app, r.input_json, r.attempts,"
            " r.base_step, coalesce((SELECT last_step FROM sessions"
            " WHERE sessions.id = r.session_id), -1), r.lease_token, r.last_seq,"
            f" r.cancel_requested OR {UNWATCHED}",
            (sorted(self.apps), limit, self.name, self._lease),
        )
        rows = cur.fetchall()
        return sorted((Claim(*row) for row in rows), key=lambda c: c.run_id)

    async def _guarded(self, run: _Running) -> None:
        # Shielded: stopping the worker hands runs back rather than dropping them.
        try:
            with trio.CancelScope(shield=True):
                await self._execute(run)
        finally:
            self._running.pop(run.claim.run_id, None)
            self._stopped.set()
            self._wake.set()

    async def _execute(self, run: _Running) -> None:
        claim = run.claim
        if claim.cancel_requested:
            await self._finish(run, "cancelled", "cancelled before it ran")
            return
        if claim.attempts > MAX_ATTEMPTS:
            await self._finish(
                run, "failed", f"abandoned after {claim.attempts - 1} claims"
            )
            return
        app = self.apps[claim.app]
        try:
            given, options = decode_input(claim.input_json)
            store = LeasedCheckpointer(self._db, claim)
            config = options.configure(attrs.evolve(app.config, checkpointer=store))
        except (QueueError, ConfigError) as exc:
            await self._finish(run, "failed", str(exc))
            return
        state: RunInput = None if claim.input_applied else given
        outcome: tuple[str, str | None] | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._renew, run)
            if self._stopping:
                run.hand_back()
            with run.scope:
                try:
                    await app.invoke_with_sinks(
                        state, [run.log], session_id=claim.session_id, config=config
                    )
                    end = run.log.end
                    paused = end is not None and end.metadata["status"] == "interrupted"
                    outcome = ("interrupted" if paused else "completed", None)
                except Exception as exc:
                    if _caused_by(exc, LeaseLost):
                        run.lost = True
                    elif _connection_lost(exc):
                        # The database failed, not the run: it goes back to
                        # the queue and resumes from its last committed step.
                        logger.warning(
                            "run %s of session %s: the database connection was"
                            " lost (%s); handing it back",
                            claim.run_id,
                            claim.session_id,
                            exc,
                        )
                        run.hand_back()
                    else:
                        outcome = ("failed", f"{type(exc).__name__}: {exc}")
            nursery.cancel_scope.cancel()
        if run.lost or run.log.lost:
            self._abandoned(claim)
        elif outcome is not None and outcome[0] != "failed":
            await self._finish(run, *outcome)
        elif run.handing_back:
            await self._hand_back(run)
        elif run.cancelled:
            await self._finish(run, "cancelled", run.cancel_reason)
        elif outcome is not None:
            await self._finish(run, *outcome)

    async def _renew(self, run: _Running) -> None:
        claim, interval = run.claim, self._lease / 3

        def renew(conn: Any) -> tuple[bool, bool, str | None] | None:
            cur = conn.cursor()
            cur.execute(
                "UPDATE weavegraph_runs AS r SET lease_expires = clock_timestamp()"
                " + make_interval(secs => %s) WHERE id = %s AND lease_token = %s"
                " AND status = 'running' AND lease_expires > clock_timestamp()"
                f" RETURNING cancel_requested, {UNWATCHED}, error",
                (self._lease, claim.run_id, claim.token),
            )
            row = cur.fetchone()
            return None if row is None else (bool(row[0]), bool(row[1]), row[2])

        while True:
            with trio.move_on_after(interval):
                await run.poke.wait()
            run.poke = trio.Event()
            try:
                found = await self._db.run(renew, autocommit=True)
            except QueueError as exc:
                logger.error("renewing the lease of run %s: %s", claim.run_id, exc)
                continue
            if found is None:
                run.lost = run.log.lost = True
                run.scope.cancel()
                return
            asked, unwatched, reason = found
            if (asked or unwatched) and not run.cancelled:
                run.cancelled = True
                if asked and reason:
                    run.cancel_reason = reason
                elif unwatched and not asked:
                    run.cancel_reason = UNWATCHED_REASON
                run.scope.cancel()

    async def _finish(self, run: _Running, status: str, error: str | None) -> None:
        """Record the run's final status and append its last events and its
        stream-end event, in one transaction that holds only while this
        worker's token is the run's: either all happen or none (another worker
        then owns the run and ends it). A run that ended before running gets
        an end event made here, so every run's log ends with exactly one."""
        claim = run.claim
        tail = await run.log.take_tail()
        if run.log.lost:
            self._abandoned(claim)
            return
        # A made end says what a runner's would: a failure is an "error".
        end = run.log.end or stream_end_event(
            claim.session_id,
            "error" if status == "failed" else status,
            claim.now_step,
            error,
        )
        tail.append(end.to_json_str())
        keep = self._retention.max_events or 0
        # The slot this run frees is filled in the same call (two statements,
        # each its own transaction: the end, then a claim).
        refill = not self._stopping and len(self._running) <= self._concurrency

        def finish(conn: Any) -> tuple[bool, list[Claim]]:
            import psycopg

            cur = conn.cursor()
            cur.execute(
                "WITH ended AS (UPDATE weavegraph_runs SET status = %(status)s,"
                " error = %(error)s, worker = NULL, lease_expires = NULL,"
                " finished_at = clock_timestamp(), last_seq = last_seq + %(n)s"
                " WHERE id = %(id)s AND lease_token = %(token)s"
                " AND status = 'running' RETURNING id, last_seq),"
                " added AS (INSERT INTO weavegraph_run_events"
                " (run_id, seq, event_json) SELECT ended.id,"
                " ended.last_seq - %(n)s + e.n, e.event FROM ended,"
                " unnest(%(events)b::text[]) WITH ORDINALITY AS e(event, n)),"
                " trimmed AS (DELETE FROM weavegraph_run_events AS e USING ended"
                " WHERE %(keep)s > 0 AND e.run_id = ended.id"
                " AND e.seq <= ended.last_seq - %(keep)s)"
                " SELECT (SELECT count(*) FROM ended),"
                " CASE WHEN %(wake)s THEN pg_notify(%(ends)s, %(done)s) END",
                {
                    "status": status,
                    "error": error,
                    "n": len(tail),
                    "id": claim.run_id,
                    "token": claim.token,
                    "events": tail,  # binary: each event's JSON as it is
                    "keep": keep,
                    "ends": ENDS_CHANNEL,
                    "done": f"done:{claim.run_id}",
                    "wake": wake,
                },
            )
            row = cur.fetchone()
            done = row is not None and row[0] == 1
            try:
                claims = self._claim_rows(cur, 1) if refill else []
            except psycopg.Error as exc:  # the end stands; the claim loop claims
                logger.warning("claiming after run %s: %s", claim.run_id, exc)
                claims = []
            return done, claims

        wake = self._events.end_wakes()  # else a wake-up within NOTIFY_EVERY
        recorded = False
        try:
            with trio.move_on_after(30.0):
                done, claims = await self._db.run(finish, autocommit=True)
                recorded = True
                self.completed += done
                if not done:
                    self._abandoned(claim)
                self._start(claims)
        except QueueError as exc:
            logger.error("recording the end of run %s: %s", claim.run_id, exc)
        if wake and not recorded:
            self._events.owe_end()  # it may have been written all the same

    def _abandoned(self, claim: Claim) -> None:
        logger.warning(
            "run %s of session %s: lease lost, abandoned (another worker owns it)",
            claim.run_id,
            claim.session_id,
        )

    async def _hand_back(self, run: _Running) -> None:
        claim = run.claim
        await run.log.flush()  # the next owner numbers its events after these

        def hand_back(conn: Any) -> None:
            cur = conn.cursor()
            cur.execute(
                "UPDATE weavegraph_runs SET status = 'queued', worker = NULL,"
                " lease_expires = NULL WHERE id = %s AND lease_token = %s"
                " AND status = 'running'",
                (claim.run_id, claim.token),
            )
            cur.execute(
                "SELECT pg_notify(%s, %s)",
                (QUEUE_CHANNEL, f"run:{claim.run_id}:{wake_app(claim.app)}"),
            )
            conn.commit()

        try:
            with trio.move_on_after(30.0):
                await self._db.run(hand_back)
        except QueueError as exc:
            logger.error("handing back run %s: %s", claim.run_id, exc)

    async def _retain(self) -> None:
        max_age = self._retention.max_age
        if max_age is None:
            await trio.sleep_forever()
        every = min(60.0, max(1.0, max_age / 2))

        def prune(conn: Any) -> None:
            cur = conn.cursor()
            cur.execute(
                "DELETE FROM weavegraph_run_events WHERE created_at"
                " < clock_timestamp() - make_interval(secs => %s)",
                (max_age,),
            )
            conn.commit()

        while True:
            try:
                await self._db.run(prune)
            except QueueError as exc:
                logger.error("pruning old events: %s", exc)
            await trio.sleep(every)


def _caused_by(exc: BaseException | None, kind: type[BaseException]) -> bool:
    """Whether ``exc`` is (or was caused by, or groups) a ``kind``."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        item = todo.pop()
        if item is None or id(item) in seen or len(seen) > 200:
            continue
        seen.add(id(item))
        if isinstance(item, kind):
            return True
        if isinstance(item, BaseExceptionGroup):
            todo.extend(item.exceptions)
        todo += (item.__cause__, item.__context__)
    return False


def _connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` came of a broken database connection (psycopg's
    ``OperationalError``: the server closed it, the network failed)."""
    import psycopg

    return _caused_by(exc, psycopg.OperationalError)


def _check_apps(apps: object) -> dict[str, App]:
    if not isinstance(apps, Mapping) or not apps:
        raise ConfigError(
            "serve_worker takes a non-empty mapping of app names to compiled apps,"
            f" got {apps!r}"
        )
    for name, app in apps.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"app names are non-empty strings, got {name!r}")
        if not isinstance(app, App):
            raise ConfigError(f"app {name!r} is not a compiled App: {app!r}")
    return dict(apps)


async def serve_worker(
    apps: Mapping[str, App],
    dsn: str,
    *,
    concurrency: int = 8,
    lease: float = DEFAULT_LEASE,
    poll: float | None = None,
    name: str | None = None,
    retention: EventRetention | None = None,
    pool_size: int | None = None,
    task_status: trio.TaskStatus[Worker] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run queued runs of ``apps`` from the queue at ``dsn`` until cancelled
    (or `Worker.stop`).

    ``await nursery.start(serve_worker, apps, dsn)`` gives the `Worker` once
    it is registered and listening. Cancelling it, like `Worker.stop`, hands
    its runs back to the queue with their finished steps stored.

    Args:
        apps: App names (as submitted to `RunQueue.submit`) to compiled apps.
        dsn: The PostgreSQL database of the queue and the checkpoint store.
        concurrency: Runs at most at once.
        lease: Seconds a claim lasts unless renewed (renewed every third).
        poll: Seconds between two looks at the queue without a notification
            (default: a quarter of the lease, at most 1 s): how soon an
            expired lease is taken over.
        name: The worker's name in the queue (default: host, pid and a
            random suffix).
        retention: How long events are kept (default: `EventRetention()`).
        pool_size: Database connections, opened at start (default: half the
            concurrency plus two, at most 16).

    Raises:
        ConfigError: bad apps or options.
        QueueError: the database cannot be used.
    """
    checked = _check_apps(apps)
    if type(concurrency) is not int or concurrency < 1:
        raise ConfigError(f"concurrency must be an int >= 1, got {concurrency!r}")
    if not isinstance(lease, int | float) or not 0.1 <= lease < math.inf:
        raise ConfigError(f"lease must be a number of seconds >= 0.1, got {lease!r}")
    if poll is None:
        poll = min(1.0, lease / 4)
    elif not isinstance(poll, int | float) or not 0 < poll < math.inf:
        raise ConfigError(f"poll must be a number of seconds > 0, got {poll!r}")
    # A few connections serve many runs: each holds one only for a statement,
    # and fewer threads contend less for the GIL.
    size = pool_size if pool_size is not None else min(concurrency // 2 + 2, 16)
    db = Database(dsn, pool_size=size, idle_timeout=max(2.0, lease))
    worker = Worker(
        checked,
        db,
        concurrency=concurrency,
        lease=float(lease),
        poll=float(poll),
        name=name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
        retention=retention if retention is not None else EventRetention(),
    )
    await worker.serve(task_status)
