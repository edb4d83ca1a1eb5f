"""The run queue and one in-process worker on a real PostgreSQL: submitting,
waiting, events, cancelling, handing back, fencing, retention, bad input."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import psycopg
import pytest
import scale_apps
import trio

from weavegraph import (
    END,
    START,
    App,
    GraphBuilder,
    PostgresCheckpointer,
    Resume,
    VersionedState,
)
from weavegraph.errors import (
    ConfigError,
    LeaseLost,
    QueueError,
    RunAlreadyActive,
    RunCancelledError,
    RunFailedError,
    StateError,
    UnknownAppError,
)
from weavegraph.scale import (
    EventRetention,
    LeasedCheckpointer,
    RunQueue,
    Worker,
    serve_worker,
)
from weavegraph.scale import queue as queue_module
from weavegraph.scale._db import (
    ENDS_CHANNEL,
    EVENTS_CHANNEL,
    QUEUE_CHANNEL,
    Database,
    Listener,
    wake_app,
)
from weavegraph.scale.worker import NOTIFY_EVERY

APPS = scale_apps.APPS


def fan_input(rounds: int = 2, delay: float = 0.01) -> VersionedState:
    state = VersionedState.with_user_message("go")
    return VersionedState(
        messages=list(state.messages), extra={"rounds": rounds, "delay": delay}
    )


def plain(state: VersionedState) -> tuple[Any, ...]:
    """What two runs of one input must agree on."""
    return (
        [(m.role, m.content) for m in state.messages],
        dict(state.extra),
    )


@asynccontextmanager
async def worker(dsn: str, **options: Any) -> AsyncIterator[Worker]:
    async with trio.open_nursery() as nursery:
        found: Worker = await nursery.start(
            functools.partial(serve_worker, APPS, dsn, **options)
        )
        try:
            yield found
        finally:
            found.stop()


async def steps_of(dsn: str, session_id: str) -> list[tuple[int, int | None]]:
    """(step, parent_step) of every stored step, oldest first."""
    async with PostgresCheckpointer(dsn) as store:
        page = await store.query_steps(session_id, limit=1000)
    return sorted((cp.step, cp.parent_step) for cp in page.checkpoints)


def contiguous(steps: list[tuple[int, int | None]]) -> bool:
    return [s for s, _ in steps] == list(range(len(steps))) and all(
        parent == (None if step == 0 else step - 1) for step, parent in steps
    )


async def test_a_run_completes_like_a_single_process_run(postgres_dsn: str) -> None:
    async with worker(postgres_dsn), RunQueue(postgres_dsn) as queue:
        submitted = await queue.submit("fanout", "s1", fan_input())
        assert submitted.status == "queued"
        final = await queue.wait("s1")
        status = await queue.status("s1")
        events = [(seq, e) async for seq, e in queue.events("s1")]
    expected = await scale_apps.fanout.invoke(fan_input())
    assert plain(final) == plain(expected)
    assert status is not None and status.status == "completed"
    assert status.attempts == 1 and status.worker is None and status.done
    assert [seq for seq, _ in events] == list(range(1, len(events) + 1))
    assert status.last_seq == len(events)
    assert events[-1][1].is_stream_end
    assert events[-1][1].metadata["status"] == "completed"
    steps = await steps_of(postgres_dsn, "s1")
    assert contiguous(steps) and steps[-1][0] == 6


async def test_a_second_submission_is_a_new_turn(postgres_dsn: str) -> None:
    async with worker(postgres_dsn), RunQueue(postgres_dsn) as queue:
        await queue.submit("fanout", "turns", fan_input(rounds=1))
        first = await queue.wait("turns")
        await queue.submit("fanout", "turns", VersionedState.with_user_message("more"))
        second = await queue.wait("turns")
        assert [r.status for r in await queue.runs("turns")] == [
            "completed",
            "completed",
        ]
    assert len(second.messages) == len(first.messages) + 1 + 3
    assert second.messages[len(first.messages)].content == "more"


async def test_events_follow_a_live_run_from_any_number(postgres_dsn: str) -> None:
    async with worker(postgres_dsn), RunQueue(postgres_dsn) as queue:
        await queue.submit("fanout", "live", fan_input(rounds=3, delay=0.03))
        seen: list[int] = []
        async for seq, _ in queue.events("live"):
            seen.append(seq)
            if seq == 5:
                break
        rest = [seq async for seq, _ in queue.events("live", after=5)]
    assert seen == [1, 2, 3, 4, 5]
    assert rest == list(range(6, 6 + len(rest))) and len(rest) > 10


async def test_cancel_stops_a_running_run(postgres_dsn: str) -> None:
    slow = VersionedState(extra={"delay": 0.05, "limit": 1000})
    async with worker(postgres_dsn, lease=1.5), RunQueue(postgres_dsn) as queue:
        await queue.submit("slow", "stopme", slow)
        async for seq, _ in queue.events("stopme"):
            if seq >= 6:
                break
        assert await queue.cancel("stopme") is True
        with pytest.raises(RunCancelledError, match="stopme"):
            await queue.wait("stopme")
        status = await queue.status("stopme")
        events = [e async for _, e in queue.events("stopme")]
        assert await queue.cancel("stopme") is False
    assert status is not None and status.status == "cancelled"
    assert events[-1].metadata["status"] == "cancelled"
    steps = await steps_of(postgres_dsn, "stopme")
    assert contiguous(steps) and len(steps) < 1000


async def test_a_queued_run_is_cancelled_at_once(postgres_dsn: str) -> None:
    async with RunQueue(postgres_dsn, apps=APPS) as queue:
        await queue.submit("chain", "never")
        assert await queue.cancel("never", "changed my mind")
        with pytest.raises(RunCancelledError, match="changed my mind"):
            await queue.wait("never")


async def test_an_interrupted_run_is_resumed_by_a_resume_run(
    postgres_dsn: str,
) -> None:
    stops = VersionedState(extra={"delay": 0.0, "limit": 3})
    async with trio.open_nursery() as nursery:
        config = attrs.evolve(scale_apps.slow.config, interrupt_after=("tick",))
        apps = {"slow": App(scale_apps.slow.graph, config)}
        found: Worker = await nursery.start(serve_worker, apps, postgres_dsn)
        async with RunQueue(postgres_dsn) as queue:
            await queue.submit("slow", "paused", stops)
            at_pause = await queue.wait("paused")
            status = await queue.status("paused")
            await queue.submit("slow", "paused", Resume())
            after = await queue.wait("paused")
        found.stop()
    assert status is not None and status.status == "interrupted"
    assert at_pause.extra["ticks"] == 1
    assert after.extra["ticks"] == 2


async def test_a_stopped_worker_hands_its_runs_back(postgres_dsn: str) -> None:
    slow = VersionedState(extra={"delay": 0.05, "limit": 30})
    async with RunQueue(postgres_dsn) as queue:
        async with worker(postgres_dsn) as first:
            await queue.submit("slow", "handed", slow)
            async for seq, _ in queue.events("handed"):
                if seq >= 8:
                    break
            first.stop()
        status = await queue.status("handed")
        assert status is not None and status.status == "queued"
        assert status.attempts == 1
        async with worker(postgres_dsn):
            final = await queue.wait("handed")
        status = await queue.status("handed")
        events = [e async for _, e in queue.events("handed")]
    assert final.extra["ticks"] == 30
    assert status is not None and status.attempts == 2
    # The first worker's cancelled sentinel was not logged: one end, completed.
    ends = [e for e in events if e.is_stream_end]
    assert [e.metadata["status"] for e in ends] == ["completed"]
    steps = await steps_of(postgres_dsn, "handed")
    assert contiguous(steps) and len(steps) == 31


async def test_a_stale_lease_cannot_write_a_step(postgres_dsn: str) -> None:
    # Claim the run by hand, let another claim take it over, then write with
    # the first claim's store: refused in the write's own transaction.
    async with RunQueue(postgres_dsn, apps=APPS) as queue:
        await queue.submit("chain", "fenced", VersionedState.with_user_message("x"))
    db = Database(postgres_dsn)
    await db.open()
    try:
        claimer = Worker(
            APPS,
            db,
            concurrency=1,
            lease=30.0,
            poll=1.0,
            name="by-hand",
            retention=EventRetention(),
        )
        (old,) = await db.run(functools.partial(claimer._claim, limit=1))
        store = LeasedCheckpointer(db, old)
        await scale_apps.chain.invoke(
            VersionedState.with_user_message("x"),
            session_id="fenced",
            config=_with_store(store),
        )
        before = await steps_of(postgres_dsn, "fenced")

        def expire(conn: Any) -> None:
            conn.execute(
                "UPDATE weavegraph_runs SET lease_expires = clock_timestamp()"
                " WHERE id = %s",
                (old.run_id,),
            )
            conn.commit()

        await db.run(expire)
        (new,) = await db.run(functools.partial(claimer._claim, limit=1))
        assert new.run_id == old.run_id and new.token != old.token
        assert new.input_applied
        with pytest.raises(LeaseLost, match="lease"):
            await scale_apps.chain.invoke(
                VersionedState.with_user_message("again"),
                session_id="fenced",
                config=_with_store(store),
            )
        assert await steps_of(postgres_dsn, "fenced") == before
        # The new owner writes on from the last committed step.
        fresh = LeasedCheckpointer(db, new)
        await scale_apps.chain.invoke(
            VersionedState.with_user_message("again"),
            session_id="fenced",
            config=_with_store(fresh),
        )
        steps = await steps_of(postgres_dsn, "fenced")
        assert contiguous(steps) and len(steps) == 2 * len(before)
    finally:
        await db.aclose()


def _with_store(store: Any) -> Any:
    return attrs.evolve(scale_apps.chain.config, checkpointer=store)


async def test_retention_keeps_the_newest_events(postgres_dsn: str) -> None:
    retention = EventRetention(max_events=5)
    async with (
        worker(postgres_dsn, retention=retention),
        RunQueue(postgres_dsn) as queue,
    ):
        await queue.submit("chain", "kept")
        await queue.wait("kept")
        status = await queue.status("kept")
        events = [seq async for seq, _ in queue.events("kept")]
    assert status is not None and status.last_seq > 5
    assert events == list(range(status.last_seq - 4, status.last_seq + 1))


@pytest.mark.parametrize(
    ("max_events", "max_age"), [(0, None), (None, 0), ("10", None), (None, -1.0)]
)
def test_bad_retention_is_refused(max_events: Any, max_age: Any) -> None:
    with pytest.raises(QueueError, match="max_"):
        EventRetention(max_events=max_events, max_age=max_age)


async def test_bad_submissions_enqueue_nothing(postgres_dsn: str) -> None:
    async with RunQueue(postgres_dsn) as queue:
        with pytest.raises(UnknownAppError, match="no worker has registered"):
            await queue.submit("fanout", "bad")
    async with worker(postgres_dsn), RunQueue(postgres_dsn) as queue:
        with pytest.raises(UnknownAppError, match=r"unknown app 'nope'.*chain"):
            await queue.submit("nope", "bad")
        with pytest.raises(StateError, match=r"VersionedState.*got dict"):
            await queue.submit("chain", "bad", {"messages": []})  # type: ignore[arg-type]
        with pytest.raises(StateError, match="cannot store"):
            await queue.submit("chain", "bad", VersionedState(extra={"f": object()}))
        with pytest.raises(QueueError, match="no run was submitted"):
            await queue.wait("bad")
        assert await queue.runs("bad") == []
        slow = VersionedState(extra={"delay": 0.05, "limit": 1000})
        await queue.submit("slow", "busy", slow)
        with pytest.raises(RunAlreadyActive, match="'busy' already has a"):
            await queue.submit("slow", "busy", slow)
        assert len(await queue.runs("busy")) == 1
        await queue.cancel("busy")
        with pytest.raises(RunCancelledError):
            await queue.wait("busy")


async def test_bad_worker_options_are_refused(postgres_dsn: str) -> None:
    with pytest.raises(ConfigError, match="mapping of app names"):
        await serve_worker({}, postgres_dsn)
    with pytest.raises(ConfigError, match="not a compiled App"):
        await serve_worker({"x": object()}, postgres_dsn)  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="concurrency"):
        await serve_worker(APPS, postgres_dsn, concurrency=0)
    with pytest.raises(ConfigError, match="lease"):
        await serve_worker(APPS, postgres_dsn, lease=0)


async def test_a_queue_must_be_opened(postgres_dsn: str) -> None:
    queue = RunQueue(postgres_dsn)
    with pytest.raises(QueueError, match="async with"):
        await queue.submit("chain", "x")


async def test_foreign_queue_tables_are_refused(postgres_dsn: str) -> None:
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE weavegraph_runs (id INT)")
    with pytest.raises(QueueError, match="did not write"):
        async with RunQueue(postgres_dsn):
            pass


async def test_opening_twice_migrates_once(postgres_dsn: str) -> None:
    async with RunQueue(postgres_dsn, apps=APPS) as queue:
        await queue.submit("chain", "kept-over")
    async with RunQueue(postgres_dsn, apps=APPS) as queue:
        status = await queue.status("kept-over")
    assert status is not None and status.status == "queued"
    with psycopg.connect(postgres_dsn) as conn:
        (version,) = conn.execute(
            "SELECT value FROM weavegraph_meta WHERE key = 'queue_schema_version'"
        ).fetchone()  # type: ignore[misc]
    assert version == "3"


async def test_a_run_that_keeps_losing_its_workers_is_failed(
    postgres_dsn: str,
) -> None:
    async with RunQueue(postgres_dsn, apps=APPS) as queue:
        await queue.submit("chain", "poison")
        with psycopg.connect(postgres_dsn) as conn:
            conn.execute("UPDATE weavegraph_runs SET attempts = 5")
        async with worker(postgres_dsn):
            with pytest.raises(RunFailedError, match="abandoned after 5 claims"):
                await queue.wait("poison")
    assert await steps_of(postgres_dsn, "poison") == []


async def test_a_cancelled_run_of_a_dead_worker_is_not_run_again(
    postgres_dsn: str,
) -> None:
    async with RunQueue(postgres_dsn, apps=APPS) as queue:
        await queue.submit("chain", "orphan")
        # As if a worker had claimed it and died: running, its lease expired.
        with psycopg.connect(postgres_dsn) as conn:
            conn.execute(
                "UPDATE weavegraph_runs SET status = 'running', attempts = 1,"
                " lease_token = 1, lease_expires = clock_timestamp(), base_step = -1"
            )
        assert await queue.cancel("orphan") is True
        async with worker(postgres_dsn):
            with pytest.raises(RunCancelledError, match="before it ran"):
                await queue.wait("orphan")
    assert await steps_of(postgres_dsn, "orphan") == []


async def _burst(snapshot: Any, ctx: Any) -> None:
    for i in range(300):
        ctx.emit("burst", f"event {i}")
        if i % 5 == 4:
            await trio.sleep(0.001)  # batches go in one after another


async def _quiet(snapshot: Any, ctx: Any) -> None:
    ctx.emit("mark", "quiet")
    await trio.sleep(3.0)


BURST = (
    GraphBuilder()
    .add_node("burst", _burst)
    .add_node("quiet", _quiet)
    .add_edge(START, "burst")
    .add_edge("burst", "quiet")
    .add_edge("quiet", END)
    .compile()
)


async def test_event_wake_ups_are_coalesced_and_the_last_batch_is_announced(
    postgres_dsn: str,
) -> None:
    heard: list[float] = []
    woken = trio.Event()

    def on_notify(channel: str, payload: str) -> None:
        nonlocal woken
        heard.append(trio.current_time())
        woken.set()
        woken = trio.Event()

    async with trio.open_nursery() as nursery, RunQueue(postgres_dsn) as queue:
        await nursery.start(Listener(postgres_dsn, (EVENTS_CHANNEL,)).run, on_notify)
        found: Worker = await nursery.start(
            functools.partial(serve_worker, {"burst": BURST}, postgres_dsn)
        )
        await queue.submit("burst", "burst")
        # Each wake-up is followed by a read: the one after the burst's last
        # batch must come while the run still sleeps (not from its end).
        with trio.fail_after(20):
            while True:
                await woken.wait()
                status = await queue.status("burst")
                events = [e async for _, e in queue.events("burst", follow=False)]
                if any(e.scope_label == "mark" for e in events):
                    break
        assert status is not None and status.status == "running"
        assert not any(  # heard while "quiet" sleeps: its end is not logged
            e.scope_label == "node.end" and e.metadata["node"] == "quiet"
            for e in events
        )
        assert sum(e.scope_label == "burst" for e in events) == 300
        # Many batches, few wake-ups: at most one per NOTIFY_EVERY.
        span = heard[-1] - heard[0]
        assert len(heard) <= (span + 0.1) / NOTIFY_EVERY + 2
        await queue.cancel("burst")
        found.stop()
        nursery.cancel_scope.cancel()


async def test_run_ends_share_wake_ups_and_every_waiter_hears_its_end(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A wake-up lost would leave a waiter polling: a minute, past the limit.
    monkeypatch.setattr(queue_module, "POLL", 60.0)
    heard: list[float] = []

    def on_notify(channel: str, payload: str) -> None:
        heard.append(trio.current_time())

    sessions = [f"end-{i}" for i in range(40)]
    async with trio.open_nursery() as nursery, RunQueue(postgres_dsn) as queue:
        await nursery.start(Listener(postgres_dsn, (ENDS_CHANNEL,)).run, on_notify)
        found: Worker = await nursery.start(
            functools.partial(serve_worker, APPS, postgres_dsn, concurrency=8)
        )
        for sid in sessions:
            await queue.submit("chain", sid, VersionedState.with_user_message(sid))
        with trio.fail_after(30):
            async with trio.open_nursery() as waiters:
                for sid in sessions:
                    waiters.start_soon(queue.wait, sid)
        assert found.completed == len(sessions)
        # Ends a moment apart share a wake-up: at most one per NOTIFY_EVERY.
        span = heard[-1] - heard[0]
        assert len(heard) < len(sessions)
        assert len(heard) <= (span + 0.1) / NOTIFY_EVERY + 2
        found.stop()
        nursery.cancel_scope.cancel()


async def test_a_listener_whose_connection_ends_says_so(postgres_dsn: str) -> None:
    heard: list[str] = []
    first = trio.Event()

    def on_notify(channel: str, payload: str) -> None:
        heard.append(payload)
        first.set()

    ends = pytest.RaisesExc(QueueError, match="LISTEN connection")
    with pytest.RaisesGroup(ends), trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listener = Listener(postgres_dsn, ("wg_test_channel",))
            await nursery.start(listener.run, on_notify)
            with psycopg.connect(postgres_dsn, autocommit=True) as conn:
                conn.execute("SELECT pg_notify('wg_test_channel', 'one')")
                await first.wait()
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE query LIKE 'LISTEN wg_test_channel%'"
                )
            await trio.sleep_forever()
    assert heard == ["one"]


async def test_a_submission_wakes_only_the_workers_of_its_app(
    postgres_dsn: str,
) -> None:
    long_name = "x" * 300
    assert wake_app("chain") == "chain" and wake_app(long_name) == ""
    async with worker(postgres_dsn) as found:
        for payload, wakes in [
            ("run:7:chain", True),
            ("run:7:another-app", False),
            ("run:7:", True),  # a name too long to send: every worker looks
            ("run:7", True),  # an older weavegraph's wake-up
        ]:
            found._wake = trio.Event()
            found._on_notify(QUEUE_CHANNEL, payload)
            assert found._wake.is_set() is wakes, payload
