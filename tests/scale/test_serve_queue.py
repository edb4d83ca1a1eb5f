"""Two ``serve --queue`` processes and two workers on one PostgreSQL: a run
posted to one server streams from the other, re-attached with Last-Event-ID,
across a worker killed with ``kill -9``; a client that leaves cancels its run."""

from __future__ import annotations

import json
import signal

import httpx2
import procs
import pytest
import trio
from test_processes import query

from weavegraph.errors import RunCancelledError
from weavegraph.scale import RunQueue

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
            first = await read_events(
                client, "POST", f"{one}/runs?detach=true", 5, json=body
            )
            seen = list(first)
            # The other server, after the last id this client saw.
            more = await read_events(
                client,
                "GET",
                f"{two}/runs/watched/events",
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
                    f"{two}/runs/watched/events?last_event_id={seen[-1][0]}",
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
    assert ids == list(range(1, len(ids) + 1))
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
            with trio.fail_after(30), pytest.raises(RunCancelledError, match="left"):
                await queue.wait("left")
            assert await queue.runs("x") == []
    finally:
        server.stop()
        worker.stop()
    assert [seq for seq, _, _ in got] == [1, 2, 3]
    assert refused.status_code == 404 and "nope" in refused.json()["error"]
