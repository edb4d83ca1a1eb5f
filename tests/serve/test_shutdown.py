"""Graceful shutdown with open streams: every stream gets its sentinel, then closes."""

from __future__ import annotations

import json
import signal
from typing import Any

import httpx2
import pytest
import trio
import trio.testing
from asgi import fetch, request
from live import STREAM_END, frames, server_process, store_session, ticker

from weavegraph import InMemoryCheckpointer
from weavegraph.serve import serve_sse, sse_app

pytestmark = [
    pytest.mark.filterwarnings("ignore:Async generator:ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


async def open_streams(
    client: httpx2.AsyncClient,
    url: str,
    count: int,
    results: dict[int, str],
    nursery: trio.Nursery,
) -> None:
    """Start ``count`` runs; return once each stream delivered its first event."""
    first = [trio.Event() for _ in range(count)]

    async def one(i: int) -> None:
        text = ""
        try:
            async with client.stream(
                "POST", f"{url}/runs", json={"session_id": f"open-{i}"}
            ) as response:
                async for chunk in response.aiter_text():
                    text += chunk
                    if "id: 1\n" in text:
                        first[i].set()
            results[i] = text
        except httpx2.HTTPError as exc:
            results[i] = text + f"\n\nclient error: {exc!r}"
        finally:
            first[i].set()

    for i in range(count):
        nursery.start_soon(one, i)
    for event in first:
        await event.wait()


def ends(text: str) -> dict[str, object]:
    """The sentinel's metadata, checking it is the stream's last frame."""
    found = frames(text)
    assert found, text
    data = json.loads(found[-1]["data"])
    assert data["scope"] == STREAM_END, text[-500:]
    metadata: dict[str, object] = data["metadata"]
    return metadata


async def test_sigterm_gives_every_open_stream_its_cancelled_sentinel() -> None:
    results: dict[int, str] = {}
    limits = httpx2.Limits(max_connections=50)
    async with server_process() as served:
        async with httpx2.AsyncClient(timeout=30, limits=limits) as client:
            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    await open_streams(client, served.url, 30, results, nursery)
                    served.process.send_signal(signal.SIGTERM)
                await served.process.wait()
                printed = await served.output()
    assert len(results) == 30
    cut = sorted(i for i, text in results.items() if "client error" in text)
    assert not cut, f"{len(cut)} of 30 streams were cut: {results[cut[0]][-300:]}"
    for i, text in sorted(results.items()):
        metadata = ends(text)
        assert metadata["status"] == "cancelled", (i, metadata)
        assert metadata["session_id"] == f"open-{i}"
    assert served.process.returncode == 0
    assert b"stopped 15" in printed


async def test_a_shutdown_trigger_ends_streams_with_their_sentinels() -> None:
    stop = trio.Event()
    results: dict[int, str] = {}
    app = sse_app(ticker(count=100_000, delay=0.01))
    with trio.fail_after(30):
        async with trio.open_nursery() as server:
            urls = await server.start(
                lambda task_status: serve_sse(
                    app, port=0, shutdown_trigger=stop.wait, task_status=task_status
                )
            )
            async with httpx2.AsyncClient(timeout=30) as client:
                async with trio.open_nursery() as nursery:
                    await open_streams(client, urls[0], 5, results, nursery)
                    stop.set()
            # serve_sse returns by itself once the streams are closed.
    assert [ends(results[i])["status"] for i in range(5)] == ["cancelled"] * 5
    assert app.closing and app.active_requests == 0


class SlowSteps(InMemoryCheckpointer):
    async def query_steps(self, session_id: str, **kw: Any) -> Any:
        await trio.sleep(0.05)
        return await super().query_steps(session_id, **kw)


async def test_aclose_ends_replays_and_live_streams_then_refuses_requests(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = SlowSteps()
    await store_session(store, "stored", 30)
    app = sse_app(ticker(count=100_000, delay=0.01), checkpointer=store)
    app.replay_page = 1
    async with (
        request(app, "GET", "/runs/stored/events") as replay,
        request(app, "POST", "/runs", {"session_id": "live"}) as live,
    ):
        await replay.wait_for(b"id: 3\n")
        await live.wait_for(b"id: 3\n")
        with trio.fail_after(5):
            await app.aclose()
        assert replay.finished.is_set() and live.finished.is_set()
    replayed = replay.frames()
    assert [f.get("event") for f in replayed[-2:]] == ["dropped", "diagnostic"]
    skipped = json.loads(replayed[-2]["data"])["dropped"]
    assert int(replayed[-3]["id"]) + skipped + 1 == int(replayed[-1]["id"])
    assert ends_in(replayed)["status"] == "completed"  # the stored session's end
    assert ends_in(live.frames())["status"] == "cancelled"
    refused = await fetch(app, "GET", "/graph")
    assert refused.status == 503
    assert "shutting down" in refused.json()["error"]


def ends_in(found: list[dict[str, str]]) -> dict[str, Any]:
    data = json.loads(found[-1]["data"])
    assert data["scope"] == STREAM_END
    metadata: dict[str, Any] = data["metadata"]
    return metadata
