"""Several real worker processes on one PostgreSQL: a worker killed with
``kill -9`` and one paused past its lease lose no run and commit no step twice."""

from __future__ import annotations

import datetime as dt
import signal
from typing import Any

import procs
import psycopg
import scale_apps
import trio
from test_queue import contiguous, fan_input, plain, steps_of

from weavegraph import VersionedState
from weavegraph.scale import RunQueue

APPS = scale_apps.APPS


def _query(dsn: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()


async def query(dsn: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    return await trio.to_thread.run_sync(lambda: _query(dsn, sql, *params))


async def test_three_workers_and_a_kill_9_finish_every_session(
    postgres_dsn: str,
) -> None:
    lease = 2.0
    workers = [procs.worker(postgres_dsn, concurrency=4, lease=lease) for _ in range(3)]
    victim = workers[0]
    sessions = [f"fan-{i}" for i in range(60)]
    given = fan_input(rounds=3, delay=0.05)
    try:
        async with RunQueue(postgres_dsn, apps=APPS) as queue:
            for sid in sessions:
                await queue.submit("fanout", sid, given)
            # Kill the victim while it holds runs with steps already stored.
            with trio.fail_after(60):
                while True:
                    held = await query(
                        postgres_dsn,
                        "SELECT r.id FROM weavegraph_runs r JOIN sessions s"
                        " ON s.id = r.session_id WHERE r.worker = %s"
                        " AND r.status = 'running' AND s.last_step >= 2",
                        procs.worker_name(victim),
                    )
                    if held:
                        break
                    await trio.sleep(0.02)
            ((killed_at,),) = await query(postgres_dsn, "SELECT clock_timestamp()")
            victim.signal(signal.SIGKILL)
            victim.popen.wait(10)
            finals: dict[str, VersionedState] = {}
            with trio.fail_after(120):
                for sid in sessions:
                    finals[sid] = await queue.wait(sid)
            statuses = {sid: await queue.status(sid) for sid in sessions}
    finally:
        for proc in workers:
            proc.stop()
    expected = await scale_apps.fanout.invoke(given)
    assert all(plain(final) == plain(expected) for final in finals.values())
    taken = [s for s in statuses.values() if s is not None and s.attempts > 1]
    assert taken, "the kill hit no running session"
    for status in taken:
        assert status.status == "completed"
        assert status.claimed_at is not None
        assert status.claimed_at - killed_at < dt.timedelta(seconds=2 * lease)
    # The store: every session's steps 0..9, each after the one before it.
    for sid in sessions:
        steps = await steps_of(postgres_dsn, sid)
        assert contiguous(steps) and len(steps) == 10, (sid, steps)


async def test_a_worker_paused_past_its_lease_commits_nothing_late(
    postgres_dsn: str,
) -> None:
    lease = 1.5
    first = procs.worker(postgres_dsn, concurrency=1, lease=lease)
    second: procs.Proc | None = None
    given = VersionedState(extra={"delay": 0.2, "limit": 25})
    try:
        async with RunQueue(postgres_dsn, apps=APPS) as queue:
            await queue.submit("slow", "paused", given)
            async for seq, _ in queue.events("paused"):
                if seq >= 8:
                    break
            first.signal(signal.SIGSTOP)
            ((stopped_at,),) = await query(
                postgres_dsn, "SELECT last_step FROM sessions WHERE id = 'paused'"
            )
            second = procs.worker(postgres_dsn, concurrency=1, lease=lease)
            with trio.fail_after(30):
                while True:
                    status = await queue.status("paused")
                    assert status is not None
                    ((now,),) = await query(
                        postgres_dsn,
                        "SELECT last_step FROM sessions WHERE id = 'paused'",
                    )
                    if status.attempts == 2 and now >= stopped_at + 3:
                        break
                    await trio.sleep(0.05)
            assert status.worker == procs.worker_name(second)
            first.signal(signal.SIGCONT)
            with trio.fail_after(60):
                final = await queue.wait("paused")
            status = await queue.status("paused")
            ends = [e async for _, e in queue.events("paused") if e.is_stream_end]
    finally:
        first.stop()
        if second is not None:
            second.stop()
    log = first.stderr_text
    assert "lease lost, abandoned" in log, log
    assert final.extra["ticks"] == 25
    assert status is not None and status.attempts == 2
    assert [e.metadata["status"] for e in ends] == ["completed"]
    # One chain of steps, each tick once: the new owner's history.
    steps = await steps_of(postgres_dsn, "paused")
    assert contiguous(steps) and len(steps) == 26
    ticks = await query(
        postgres_dsn, "SELECT step FROM steps WHERE session_id = 'paused' ORDER BY step"
    )
    assert [t for (t,) in ticks] == list(range(26))


async def test_sigterm_hands_the_runs_back_without_losing_a_step(
    postgres_dsn: str,
) -> None:
    first = procs.worker(postgres_dsn, concurrency=2, lease=5.0)
    given = VersionedState(extra={"delay": 0.05, "limit": 30})
    try:
        async with RunQueue(postgres_dsn, apps=APPS) as queue:
            await queue.submit("slow", "term", given)
            async for seq, _ in queue.events("term"):
                if seq >= 8:
                    break
            first.signal(signal.SIGTERM)
            assert first.popen.wait(30) == 128 + signal.SIGTERM
            status = await queue.status("term")
            assert status is not None and status.status == "queued"
            (stored,) = await query(
                postgres_dsn, "SELECT last_step FROM sessions WHERE id = 'term'"
            )
            second = procs.worker(postgres_dsn, concurrency=2, lease=5.0)
            try:
                with trio.fail_after(60):
                    final = await queue.wait("term")
            finally:
                second.stop()
    finally:
        first.stop()
    assert stored[0] >= 2
    assert final.extra["ticks"] == 30
    steps = await steps_of(postgres_dsn, "term")
    assert contiguous(steps) and len(steps) == 31


async def test_the_worker_command_bounds_the_event_log(postgres_dsn: str) -> None:
    proc = procs.worker(postgres_dsn, "--keep-events", "3")
    try:
        async with RunQueue(postgres_dsn) as queue:
            await queue.submit("chain", "bounded")
            with trio.fail_after(30):
                await queue.wait("bounded")
            status = await queue.status("bounded")
            kept = [seq async for seq, _ in queue.events("bounded")]
    finally:
        proc.stop()
    assert status is not None and status.last_seq > 3
    assert kept == [status.last_seq - 2, status.last_seq - 1, status.last_seq]


def test_the_worker_command_refuses_a_bad_retention(
    capsys: Any, postgres_dsn: str
) -> None:
    from weavegraph._cli import main

    argv = ["worker", "scale_apps:APPS", "--db", postgres_dsn]
    assert main([*argv, "--events-max-age", "-5"]) == 2
    assert "max_age must be" in capsys.readouterr().err


def test_the_worker_command_needs_postgres(capsys: Any) -> None:
    from weavegraph._cli import main

    assert main(["worker", "scale_apps:APPS", "--db", "runs.db"]) == 2
    assert "PostgreSQL URL" in capsys.readouterr().err


def test_the_worker_command_needs_apps(capsys: Any, postgres_dsn: str) -> None:
    from weavegraph._cli import main

    assert main(["worker", "scale_apps:HERE", "--db", postgres_dsn]) == 2
    assert "no attribute" in capsys.readouterr().err
    assert main(["worker", "x=scale_apps:APPS", "--db", postgres_dsn]) == 2
    assert "names one App" in capsys.readouterr().err
