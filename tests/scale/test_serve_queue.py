"""Two ``serve --queue`` processes and two workers on one PostgreSQL: a run
posted to one server streams from the other, re-attached with Last-Event-ID,
across a worker killed with ``kill -9``; a client that leaves cancels its run."""

from __future__ import annotations

import functools
import json
import math
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import procs
import pytest
import scale_apps
import trio
from test_processes import query

from weavegraph import PostgresCheckpointer
from weavegraph.errors import RunCancelledError
from weavegraph.scale import RunQueue, serve_worker
from weavegraph.serve import queue_sse_app, serve_sse

# A client that stops reading leaves httpx2's nested async generators
# unfinished; trio warns when they are collected (the client library's, not ours).
pytestmark = [
    pytest.mark.filterwarnings("ignore:Async generator:ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


async def read_events(
    client: httpx2.AsyncClient,
    method: str,
    url: str,
    count: float,
    **kwargs: object,
) -> list[tuple[int, str, str]]:
    """Up to ``count`` (id, event, data) frames of one stream, then hang up."""
    got: list[tuple[int, str, str]] = []
    async with client.stream(method, url, **kwargs) as response:  # type: ignore[arg-type]
        assert response.status_code == 200, await response.aread()
        async for sse in httpx2.EventSource(response):
            got.append((int(sse.id), sse.event, sse.data))
            if len(got) >= count:
                break
    return got


async def test_a_run_streams_from_another_server_across_a_worker_kill(
    postgres_dsn: str,
) -> None:
    workers = [procs.worker(postgres_dsn, concurrency=2, lease=2.0) for _ in range(2)]
    servers = [procs.server(postgres_dsn) for _ in range(2)]
    (_, one), (_, two) = servers
    body = {
        "graph": "slow",
        "session_id": "watched",
        "extra": {"delay": 0.1, "limit": 30},
    }
    try:
        async with httpx2.AsyncClient(timeout=60) as client:
            posted = f"{one}/runs?detach=true&modes=events,updates"
            first = await read_events(client, "POST", posted, 5, json=body)
            seen = list(first)
            # The other server, after the last id this client saw.
            more = await read_events(
                client,
                "GET",
                f"{two}/runs/watched/events?modes=events,updates",
                10,
                headers={"Last-Event-ID": str(seen[-1][0])},
            )
            seen += more
            ((holder,),) = await query(
                postgres_dsn,
                "SELECT worker FROM weavegraph_runs WHERE session_id = 'watched'",
            )
            (victim,) = [w for w in workers if procs.worker_name(w) == holder]
            victim.signal(signal.SIGKILL)
            victim.popen.wait(10)
            with trio.fail_after(60):
                seen += await read_events(
                    client,
                    "GET",
                    f"{two}/runs/watched/events?modes=updates,events"
                    f"&last_event_id={seen[-1][0]}",
                    float("inf"),
                )
        async with RunQueue(postgres_dsn) as queue:
            status = await queue.status("watched")
            final = await queue.wait("watched")
    finally:
        for proc, _ in servers:
            proc.stop()
        for proc in workers:
            proc.stop()
    ids = [seq for seq, _, _ in seen]
    assert ids == list(range(1, len(ids) + 1))  # every mode asked: every id
    assert {"updates", "diagnostic"} <= {kind for _, kind, _ in seen}
    assert status is not None and status.attempts == 2
    assert ids[-1] == status.last_seq
    end = json.loads(seen[-1][2])
    assert end["scope"] == "__weavegraph_stream_end__"
    assert end["metadata"]["status"] == "completed"
    assert all(json.loads(d)["scope"] != end["scope"] for _, _, d in seen[:-1])
    assert final.extra["ticks"] == 30


async def test_a_client_that_leaves_cancels_its_run(postgres_dsn: str) -> None:
    worker = procs.worker(postgres_dsn, concurrency=2, lease=2.0)
    server, url = procs.server(postgres_dsn)
    body = {"graph": "slow", "session_id": "left", "extra": {"delay": 0.05}}
    try:
        async with httpx2.AsyncClient(timeout=60) as client:
            got = await read_events(client, "POST", f"{url}/runs", 3, json=body)
            refused = await client.post(
                f"{url}/runs", json={"graph": "nope", "session_id": "x"}
            )
        async with RunQueue(postgres_dsn) as queue:
            with trio.fail_after(30):
                with pytest.raises(RunCancelledError, match="watching"):
                    await queue.wait("left")
            assert await queue.runs("x") == []
    finally:
        server.stop()
        worker.stop()
    assert [seq for seq, _, _ in got] == [1, 2, 3]
    assert refused.status_code == 404 and "nope" in refused.json()["error"]


# ------------------------------------------------- one server in this process


@asynccontextmanager
async def queue_server(dsn: str, **options: Any) -> AsyncIterator[tuple[str, RunQueue]]:
    """An in-process worker and ``queue_sse_app`` server on loopback."""
    async with trio.open_nursery() as nursery:
        worker = await nursery.start(
            functools.partial(serve_worker, scale_apps.APPS, dsn, lease=1.5)
        )
        async with RunQueue(dsn) as queue:
            store = PostgresCheckpointer(dsn)
            app = queue_sse_app(scale_apps.APPS, queue, checkpointer=store, **options)
            urls = await nursery.start(functools.partial(serve_sse, app, port=0))
            try:
                yield urls[0], queue
            finally:
                worker.stop()
                nursery.cancel_scope.cancel()
                await store.aclose()


async def test_queued_runs_take_breakpoints_resume_and_are_listed(
    postgres_dsn: str,
) -> None:
    body = {
        "graph": "slow",
        "session_id": "bp",
        "extra": {"delay": 0.0, "limit": 3},
        "interrupt_after": ["tick"],
    }
    long = {"graph": "slow", "session_id": "busy", "extra": {"delay": 0.05}}
    async with (
        queue_server(postgres_dsn) as (url, queue),
        httpx2.AsyncClient(timeout=30) as client,
    ):
        paused = await read_events(
            client, "POST", f"{url}/runs?detach=true", math.inf, json=body
        )
        listed = (await client.get(f"{url}/runs")).json()["runs"]
        resumed = await read_events(
            client, "POST", f"{url}/runs/bp/resume?detach=true", math.inf, json={}
        )
        typo = await client.post(
            f"{url}/runs", json={**body, "interrupt_before": ["nope"]}
        )
        await read_events(client, "POST", f"{url}/runs?detach=true", 2, json=long)
        edit = await client.post(f"{url}/runs/busy/state", json={"extra": {"delay": 1}})
        await queue.cancel("busy")
        final = await queue.wait("bp")
    assert json.loads(paused[-1][2])["metadata"]["status"] == "interrupted"
    assert json.loads(resumed[-1][2])["metadata"]["status"] == "completed"
    assert final.extra["ticks"] == 3
    (entry,) = [r for r in listed if r["session_id"] == "bp"]
    assert entry["status"] == "interrupted" and entry["graph"] == "slow"
    assert entry["events"] == paused[-1][0] and entry["detached"] is True
    assert typo.status_code == 400 and "nope" in typo.json()["error"]
    assert edit.status_code == 409 and "running" in edit.json()["error"]


async def test_a_run_lives_while_any_client_watches_it(postgres_dsn: str) -> None:
    # As in the single-process server: not only the poster, every client
    # streaming the run (here through GET /runs/{id}/events) keeps it alive.
    body = {
        "graph": "slow",
        "session_id": "kept",
        "extra": {"delay": 0.05, "limit": 1000},
    }
    async with (
        queue_server(postgres_dsn) as (url, queue),
        httpx2.AsyncClient(timeout=30) as client,
    ):
        async with trio.open_nursery() as nursery:
            attached, leave = trio.Event(), trio.Event()

            async def watch() -> None:
                url_events = f"{url}/runs/kept/events"
                async with client.stream("GET", url_events) as response:
                    async for _ in httpx2.EventSource(response):
                        attached.set()
                        if leave.is_set():
                            break

            posted: list[tuple[int, str, str]] = []
            async with client.stream("POST", f"{url}/runs", json=body) as response:
                async for sse in httpx2.EventSource(response):
                    posted.append((int(sse.id), sse.event, sse.data))
                    if len(posted) == 2:
                        nursery.start_soon(watch)
                    if attached.is_set():
                        break  # the poster hangs up once the other watches
            await trio.sleep(1.0)  # the poster has left; the watcher reads on
            running = await queue.status("kept")
            leave.set()
        with trio.fail_after(10), pytest.raises(RunCancelledError, match="watching"):
            await queue.wait("kept")
    assert [seq for seq, _, _ in posted][:2] == [1, 2]
    assert running is not None and running.status == "running"
    # A client that asked for events only got no updates frames.
    assert all(kind != "updates" for _, kind, _ in posted)
