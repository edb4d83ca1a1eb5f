"""Per-run options, end events, watchers and listings of the run queue, and the
store's public fence, on a real PostgreSQL with in-process workers."""

from __future__ import annotations

import functools
from typing import Any

import psycopg
import pytest
import scale_apps
import trio
from test_queue import APPS, steps_of, worker

import weavegraph.scale.queue as queue_module
from weavegraph import PostgresCheckpointer, Resume, VersionedState
from weavegraph.errors import (
    CheckpointError,
    ConfigError,
    RunCancelledError,
    RunFailedError,
)
from weavegraph.scale import RunQueue, Worker
from weavegraph.scale._db import migrate_queue


def ticks(limit: int, delay: float = 0.0) -> VersionedState:
    return VersionedState(extra={"delay": delay, "limit": limit})


async def ends_of(queue: RunQueue, session_id: str) -> list[str]:
    """The statuses of every stream-end event in the session's latest run."""
    return [
        e.metadata["status"]
        async for _, e in queue.events(session_id, follow=False)
        if e.is_stream_end
    ]


async def test_breakpoints_and_modes_are_given_per_run(postgres_dsn: str) -> None:
    async with worker(postgres_dsn), RunQueue(postgres_dsn) as queue:
        await queue.submit(
            "slow", "bp", ticks(4), interrupt_after=["tick"], modes=["values"]
        )
        paused = await queue.wait("bp")
        first = await queue.status("bp")
        kinds = {e.type async for _, e in queue.events("bp")}
        # The resume goes on with the app's own breakpoints (none).
        await queue.submit("slow", "bp", Resume())
        final = await queue.wait("bp")
        second = [e.type async for _, e in queue.events("bp")]
    assert first is not None and first.status == "interrupted"
    assert paused.extra["ticks"] == 1 and final.extra["ticks"] == 4
    assert "values" in kinds
    assert "values" not in second  # the app's own modes: events only


async def test_bad_run_options_are_refused_and_enqueue_nothing(
    postgres_dsn: str,
) -> None:
    async with RunQueue(postgres_dsn, apps=APPS) as queue:
        for options, match in (
            ({"interrupt_before": "tick"}, "interrupt_before must be node names"),
            ({"interrupt_after": [3]}, "interrupt_after must be node names"),
            ({"modes": ["everything"]}, "everything"),
            ({"watcher": ""}, "watcher must be"),
            ({"watcher": "w", "grace": -1}, "grace must be"),
            ({"watcher": "w", "grace": True}, "grace must be"),
        ):
            with pytest.raises(ConfigError, match=match):
                await queue.submit("slow", "bad", ticks(1), **options)
        assert await queue.runs("bad") == []
        # A breakpoint on a node the app lacks fails the run, saying so.
        await queue.submit("slow", "ghost", ticks(1), interrupt_before=["nope"])
        async with worker(postgres_dsn):
            with pytest.raises(RunFailedError, match="nope"):
                await queue.wait("ghost")
        assert await ends_of(queue, "ghost") == ["error"]  # as a runner says


async def test_a_run_ended_before_it_ran_still_logs_one_end(
    postgres_dsn: str,
) -> None:
    async with RunQueue(postgres_dsn, apps=APPS) as queue:
        await queue.submit("chain", "never")
        await queue.cancel("never", "not today")
        await queue.submit("chain", "poison")
        with psycopg.connect(postgres_dsn) as conn:
            conn.execute(
                "UPDATE weavegraph_runs SET attempts = 5 WHERE session_id = 'poison'"
            )
        async with worker(postgres_dsn):
            with pytest.raises(RunFailedError):
                await queue.wait("poison")
        never = [e async for _, e in queue.events("never")]
        assert await ends_of(queue, "poison") == ["error"]
        status = await queue.status("never")
    assert [e.metadata["status"] for e in never] == ["cancelled"]
    assert never[0].metadata["error"] == "not today"
    assert status is not None and status.last_seq == 1


async def test_an_end_logged_by_a_worker_that_lost_its_lease_is_not_kept(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first worker finishes the run but, before it records the end, its
    # lease expires and the second worker takes the run over: the end event
    # goes in with the final status or not at all, so the log holds one end,
    # the new owner's.
    finish = Worker._finish
    taken_over = trio.Event()

    async def late_finish(self: Worker, run: Any, status: str, error: Any) -> None:
        if self.name == "first":

            def expire(conn: Any) -> None:
                conn.execute(
                    "UPDATE weavegraph_runs SET lease_expires = clock_timestamp()"
                    " WHERE id = %s",
                    (run.claim.run_id,),
                )
                conn.commit()

            await self._db.run(expire)
            await taken_over.wait()
        await finish(self, run, status, error)

    original_claim = Worker._claim_rows

    def claim_rows(self: Worker, cur: Any, limit: int) -> list[Any]:
        claims = original_claim(self, cur, limit)
        if self.name == "second" and claims:
            trio.from_thread.run_sync(taken_over.set)
        return claims

    monkeypatch.setattr(Worker, "_finish", late_finish)
    monkeypatch.setattr(Worker, "_claim_rows", claim_rows)
    async with RunQueue(postgres_dsn) as queue:
        async with worker(postgres_dsn, name="first", concurrency=1):
            await queue.submit("chain", "twice", VersionedState.with_user_message("x"))
            async with worker(postgres_dsn, name="second", poll=0.05):
                final = await queue.wait("twice")
        status = await queue.status("twice")
        seqs = [seq async for seq, _ in queue.events("twice")]
        ends = await ends_of(queue, "twice")
    assert ends == ["completed"]
    assert seqs == list(range(1, len(seqs) + 1))
    assert status is not None and status.attempts == 2
    assert status.status == "completed" and status.last_seq == seqs[-1]
    assert [m.content for m in final.messages][-1] == "n9"
    assert len(await steps_of(postgres_dsn, "twice")) == 11


async def test_a_run_lives_while_any_watcher_watches(postgres_dsn: str) -> None:
    slow = ticks(1000, delay=0.05)
    async with worker(postgres_dsn, lease=1.5), RunQueue(postgres_dsn) as queue:
        run = await queue.submit("slow", "owned", slow, watcher="poster")
        async with queue.watch(run.run_id, "poster"):
            async with queue.watch(run.run_id, "second"):
                async for seq, _ in queue.events("owned"):
                    if seq >= 3:
                        break
            # The second watcher left; the poster still watches.
            await trio.sleep(1.0)
            assert (await queue.status("owned")).status == "running"  # type: ignore[union-attr]
            listed = {r.session_id: r for r in await queue.list_runs(active=True)}
        with trio.fail_after(10), pytest.raises(RunCancelledError, match="watching"):
            await queue.wait("owned")
        assert await ends_of(queue, "owned") == ["cancelled"]
    assert listed["owned"].watchers == 1 and listed["owned"].watched


async def test_a_run_whose_watchers_vanished_is_cancelled_by_its_worker(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A watcher whose server died renews nothing: its row expires, and the
    # worker's next lease renewal cancels the run. A detached run goes on.
    monkeypatch.setattr(queue_module, "WATCH_TTL", 0.5)
    slow = ticks(40, delay=0.05)
    async with worker(postgres_dsn, lease=1.5), RunQueue(postgres_dsn) as queue:
        await queue.submit("slow", "orphaned", slow, watcher="gone", grace=0.2)
        await queue.submit("slow", "detached", slow)
        with trio.fail_after(10), pytest.raises(RunCancelledError, match="watching"):
            await queue.wait("orphaned")
        final = await queue.wait("detached")
        runs = await queue.list_runs(limit=2)
    assert final.extra["ticks"] == 40
    assert [(r.session_id, r.watched) for r in runs] == [
        ("detached", False),
        ("orphaned", True),
    ]
    stored = await steps_of(postgres_dsn, "orphaned")
    assert 0 < len(stored) < 41


async def test_list_runs_is_checked(postgres_dsn: str) -> None:
    async with RunQueue(postgres_dsn, apps=APPS) as queue:
        for limit in (0, 10_001, "5"):
            with pytest.raises(Exception, match="limit"):
                await queue.list_runs(limit=limit)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="watcher"):
            async with queue.watch(1, ""):
                pass
        assert await queue.list_runs() == []


async def test_a_fence_refuses_writes_and_leaves_reads(postgres_dsn: str) -> None:
    refuse = False

    def fence(conn: Any) -> None:
        conn.execute("SELECT 1")
        if refuse:
            raise ConfigError("fenced off")

    async with PostgresCheckpointer(postgres_dsn) as owner:
        await owner.open()
        pool = owner._pool
        store = PostgresCheckpointer(
            postgres_dsn, fence=fence, pool=pool, limiter=trio.CapacityLimiter(2)
        )
        run = functools.partial(
            scale_apps.chain.invoke, session_id="fence", config=_store(store)
        )
        await run(VersionedState.with_user_message("x"))
        refuse = True
        # The writer reports what the fence raised, as a store failure.
        with pytest.raises(CheckpointError, match="fenced off"):
            await run(VersionedState.with_user_message("y"))
        assert (await store.load_latest("fence")).step == 10  # type: ignore[union-attr]
        await store.aclose()
        # The pool was given: closing the store left it open.
        assert (await owner.load_latest("fence")) is not None
    with pytest.raises(CheckpointError, match="callable"):
        PostgresCheckpointer(postgres_dsn, fence=3)  # type: ignore[arg-type]
    with pytest.raises(CheckpointError, match="limiter"):
        PostgresCheckpointer(postgres_dsn, limiter=trio.CapacityLimiter(1))


def _store(store: Any) -> Any:
    import attrs

    return attrs.evolve(scale_apps.chain.config, checkpointer=store)


async def test_a_version_1_queue_is_upgraded_in_place(postgres_dsn: str) -> None:
    with psycopg.connect(postgres_dsn) as conn:
        migrate_queue(conn, target=1)
        conn.execute(
            "INSERT INTO weavegraph_runs (session_id, app, input_json, status)"
            """ VALUES ('old', 'chain', '{"kind": "none"}', 'queued')"""
        )
        conn.commit()
    async with RunQueue(postgres_dsn, apps=APPS) as queue:
        status = await queue.status("old")
        async with worker(postgres_dsn):
            await queue.wait("old")
    with psycopg.connect(postgres_dsn) as conn:
        (version,) = conn.execute(
            "SELECT value FROM weavegraph_meta WHERE key = 'queue_schema_version'"
        ).fetchone()  # type: ignore[misc]
        keys = conn.execute(
            "SELECT conname FROM pg_constraint WHERE contype = 'f'"
            " AND conrelid = 'weavegraph_run_events'::regclass"
        ).fetchall()
        (logged,) = conn.execute(
            "SELECT count(*) FROM weavegraph_run_events AS e"
            " JOIN weavegraph_runs AS r ON r.id = e.run_id WHERE r.session_id = 'old'"
        ).fetchone()  # type: ignore[misc]
    assert version == "3"
    assert keys == []  # schema 3: an event row no longer checks its run's row
    assert logged > 1  # the run's events and its stream-end event
    assert status is not None and not status.watched


async def test_a_run_whose_database_connections_broke_goes_on(
    postgres_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The server ends every connection of the worker's pool in the middle of
    # a run: the run is not failed (the database failed, not the run), it is
    # handed back and resumed from its last committed step, and its events
    # keep their numbers.
    slow = ticks(40, delay=0.03)
    async with worker(postgres_dsn, name="broken", lease=3.0, poll=0.1):
        async with RunQueue(postgres_dsn) as queue:
            await queue.submit("slow", "cut", slow)
            async for seq, _ in queue.events("cut"):
                if seq >= 20:
                    break
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            ended = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE pid <> pg_backend_pid() AND datname = current_database()"
                " AND query NOT LIKE 'LISTEN%'"
            ).fetchone()
        async with RunQueue(postgres_dsn) as queue:
            with trio.fail_after(30):
                final = await queue.wait("cut")
            status = await queue.status("cut")
            seqs = [seq async for seq, _ in queue.events("cut")]
            ends = await ends_of(queue, "cut")
    assert ended is not None and ended[0] >= 1
    assert final.extra["ticks"] == 40
    assert status is not None and status.status == "completed"
    assert status.attempts == 2  # handed back, then claimed again
    assert "connection was lost" in caplog.text
    assert seqs == list(range(1, len(seqs) + 1)) and ends == ["completed"]
    steps = await steps_of(postgres_dsn, "cut")
    assert [s for s, _ in steps] == list(range(41))
