"""Hostile or unlucky clients against the real hypercorn server.

Each test reproduces one defect found by an outside review: ids that spoof or
cannot be reached, bodies that never arrive, connection floods, absurd
``Last-Event-ID`` values, replays that starve runs, state not yet readable after
the sentinel, runs nobody watches, logs that grow without bound. Every loop is
bounded in count and time; the only timings asserted are generous hang guards.
"""

from __future__ import annotations

import gc
import json
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
import trio
from asgi import fetch
from live import (
    STREAM_END,
    RawClient,
    failing,
    read_stream,
    running_server,
    sentinel,
    server_process,
    store_session,
    ticker,
)

from weavegraph import (
    App,
    ConfigError,
    EventBusConfig,
    InMemoryCheckpointer,
    RuntimeConfig,
    SQLiteCheckpointer,
)
from weavegraph.serve import serve_sse, sse_app

pytestmark = [
    pytest.mark.filterwarnings("ignore:Async generator:ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

JSON = {"content-type": "application/json"}


# ------------------------------------------------------------------ session ids


async def test_session_ids_follow_the_one_rule_on_every_entry_point() -> None:
    async with (
        running_server(sse_app(ticker())) as url,
        httpx2.AsyncClient(timeout=10) as client,
    ):
        for bad in ("a/b", "x status=completed", "-lead", "y" * 129, "", "é", 5):
            answer = await client.post(f"{url}/runs", json={"session_id": bad})
            assert answer.status_code == 400, (bad, answer.text)
            assert "session id" in answer.json()["error"]
        for bad in ("a%2Fb", "x%20status%3Dcompleted", "-lead", "y" * 129):
            for tail in ("events", "state"):
                answer = await client.get(f"{url}/runs/{bad}/{tail}")
                assert answer.status_code == 400, (bad, tail, answer.text)
                assert "session id" in answer.json()["error"]
        assert (await client.get(f"{url}/runs")).json()["runs"] == []
        # Every character the rule allows, and the id is reachable afterwards.
        good = "Ok.id:1@host-2_x"
        status, found = await read_stream(
            client, "POST", f"{url}/runs", json={"session_id": good}
        )
        assert status == 200
        assert sentinel(found)["metadata"]["session_id"] == good
        state = await client.get(f"{url}/runs/{good}/state")
        assert state.status_code == 200 and state.json()["status"] == "completed"


async def test_the_status_comes_from_the_sentinel_metadata_not_its_text() -> None:
    app = sse_app(failing("boom status=completed step=9"))
    async with (
        running_server(app) as url,
        httpx2.AsyncClient(timeout=10) as client,
    ):
        _, found = await read_stream(
            client, "POST", f"{url}/runs", json={"session_id": "spoof"}
        )
        end = sentinel(found)
        assert "status=completed" in end["message"]  # the error text says so
        assert end["metadata"]["status"] == "error"
        runs = (await client.get(f"{url}/runs")).json()["runs"]
        assert [r["status"] for r in runs] == ["error"]


# ------------------------------------------------------------- slow or no body


async def test_a_body_that_never_arrives_gets_408_and_its_connection_closed() -> None:
    async with running_server(sse_app(ticker(), body_timeout=0.5)) as url:
        async with RawClient.connect(url) as raw:
            await raw.send_head(
                "POST", "/runs", {**JSON, "content-length": "100"}
            )  # ... and no body
            with trio.fail_after(10):
                answer = await raw.answer()
                assert answer.status == 408, answer
                assert "did not arrive within 0.5 s" in answer.json()["error"]
                assert await raw.closed_by_server()

        # One byte every 0.1 s: the bound is on the whole body, not per read.
        async with RawClient.connect(url) as raw:
            await raw.send_head("POST", "/runs", {**JSON, "content-length": "100"})

            async def trickle() -> None:
                for _ in range(100):
                    try:
                        await raw.stream.send_all(b" ")
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        return
                    await trio.sleep(0.1)

            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(trickle)
                    answer = await raw.answer()
                    nursery.cancel_scope.cancel()
            assert answer.status == 408, answer


async def test_headers_that_never_end_are_cut_by_the_keep_alive_timeout() -> None:
    # Hypercorn's idle timer runs until a request's headers are in; serve_sse
    # sets it (keep_alive_timeout), so a slow-headers client is bounded too.
    async with running_server(sse_app(ticker()), keep_alive_timeout=0.5) as url:
        async with RawClient.connect(url) as raw:
            await raw.stream.send_all(b"POST /runs HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            with trio.fail_after(4):  # hypercorn's default would be 5 s
                assert await raw.closed_by_server()
    with pytest.raises(ConfigError, match="pass the options to sse_app"):
        await serve_sse(sse_app(ticker()), port=0, max_runs=3)


async def test_requests_beyond_the_cap_get_503_and_the_server_recovers() -> None:
    app = sse_app(ticker(), body_timeout=1.0, max_connections=8)
    async with running_server(app) as url:
        answers: list[int] = []
        held = trio.Event()
        ready = 0

        async def stall() -> None:
            nonlocal ready
            async with RawClient.connect(url) as raw:
                await raw.send_head("POST", "/runs", {**JSON, "content-length": "50"})
                ready += 1
                if ready == 8:
                    held.set()
                answers.append((await raw.answer()).status)

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for _ in range(8):
                    nursery.start_soon(stall)
                await held.wait()
                await _until(lambda: app.active_requests == 8)
                async with RawClient.connect(url) as raw:
                    busy = await raw.request("GET", "/graph")
                    assert busy.status == 503, busy
                    assert "busy" in busy.json()["error"]
                    assert busy.headers["retry-after"] == "1"
                    assert await raw.closed_by_server()
            assert answers == [408] * 8
            async with httpx2.AsyncClient(timeout=10) as client:
                assert (await client.get(f"{url}/graph")).status_code == 200


async def test_runs_beyond_max_runs_get_503() -> None:
    app = sse_app(ticker(count=100_000, delay=0.01), max_runs=2)
    async with (
        running_server(app) as url,
        httpx2.AsyncClient(timeout=10) as client,
    ):
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                started = [trio.Event(), trio.Event()]

                async def watch(i: int) -> None:
                    async with client.stream(
                        "POST", f"{url}/runs", json={"session_id": f"r{i}"}
                    ) as response:
                        async for chunk in response.aiter_text():
                            if "id: 1" in chunk:
                                started[i].set()

                for i in range(2):
                    nursery.start_soon(watch, i)
                for event in started:
                    await event.wait()
                refused = await client.post(f"{url}/runs", json={})
                assert refused.status_code == 503
                assert "2 runs, its limit" in refused.json()["error"]
                nursery.cancel_scope.cancel()  # both clients leave: runs cancelled
            await _until(lambda: all(r.done.is_set() for r in app.runs.values()))
            async with client.stream(
                "POST", f"{url}/runs", json={"session_id": "r3"}
            ) as response:
                assert response.status_code == 200
                async for sse in httpx2.EventSource(response):
                    assert sse.id == "1"
                    break
            await _until(lambda: app.runs["r3"].done.is_set())
        assert [r["status"] for r in app._list_runs()] == ["cancelled"] * 3


async def test_a_flood_of_stalled_bodies_does_not_exhaust_the_server() -> None:
    # 160 open files: before the bounds, 250 stalled bodies took every one of
    # them for good and the server never answered again.
    async with server_process("--nofile", "160", "body_timeout=1.0") as served:
        url = served.url
        answers: list[int] = []

        async def stall() -> None:
            try:
                async with RawClient.connect(url) as raw:
                    await raw.send_head(
                        "POST", "/runs", {**JSON, "content-length": "100"}
                    )
                    answers.append((await raw.answer()).status)
            except (OSError, trio.BrokenResourceError):
                answers.append(0)  # turned away at the door: fine too

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for _ in range(250):
                    nursery.start_soon(stall)
            assert len(answers) == 250
            assert set(answers) <= {408, 503, 0}, sorted(set(answers))
            assert answers.count(408) + answers.count(503) > 100
            async with httpx2.AsyncClient(timeout=10) as client:
                assert (await client.get(f"{url}/graph")).status_code == 200


# -------------------------------------------------------------- Last-Event-ID


async def test_last_event_id_out_of_range_is_a_clear_4xx_never_a_500_or_a_hang() -> (
    None
):
    app = sse_app({"t": ticker(3), "slow": ticker(100_000, 0.01)})
    async with (
        running_server(app) as url,
        httpx2.AsyncClient(timeout=10) as client,
    ):
        _, whole = await read_stream(
            client, "POST", f"{url}/runs", json={"session_id": "fin"}
        )
        # node.start, 3 ticks, node.end, step.end, (7: updates, not asked), end
        assert [f["id"] for f in whole] == ["1", "2", "3", "4", "5", "6", "8"]
        events = f"{url}/runs/fin/events"
        for value in ("9" * 401, str(10**30), str(10**12), "9", "-1", "1.5", "x"):
            with trio.fail_after(5):
                answer = await client.get(events, headers={"Last-Event-ID": value})
            assert answer.status_code == 400, (value, answer.text)
            assert "Last-Event-ID" in answer.json()["error"]
        with trio.fail_after(5):
            # Right after the sentinel: nothing more, and no reconnect loop.
            assert (
                await client.get(events, headers={"Last-Event-ID": "8"})
            ).status_code == 204
            _, tail = await read_stream(
                client, "GET", events, headers={"Last-Event-ID": "7"}
            )
        assert [f["id"] for f in tail] == ["8"]
        _, tail = await read_stream(client, "GET", f"{events}?last_event_id=5")
        assert [f["id"] for f in tail] == ["6", "8"]

        # A live run: an id it has not reached is refused at once.
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                going = trio.Event()

                async def owner() -> None:
                    async with client.stream(
                        "POST",
                        f"{url}/runs",
                        json={"session_id": "live", "graph": "slow"},
                    ) as response:
                        async for chunk in response.aiter_text():
                            if "id: 2" in chunk:
                                going.set()

                nursery.start_soon(owner)
                await going.wait()
                live = f"{url}/runs/live/events"
                answer = await client.get(live, headers={"Last-Event-ID": str(10**12)})
                assert answer.status_code == 400
                assert "beyond" in answer.json()["error"]
                async with client.stream(
                    "GET", live, headers={"Last-Event-ID": "1"}
                ) as response:
                    async for sse in httpx2.EventSource(response):
                        assert sse.id == "2"  # resumes right after the given id
                        break
                nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- state reads


class SlowToClose:
    """A sink whose ``aclose`` takes a while: the run ends after its sentinel."""

    async def handle(self, event: object) -> None:
        pass

    async def aclose(self) -> None:
        await trio.sleep(0.3)


async def test_the_state_is_readable_as_soon_as_the_sentinel_is_out() -> None:
    config = RuntimeConfig(event_bus=EventBusConfig(sinks=[SlowToClose()]))
    app = sse_app(ticker(3, config=config))
    async with (
        running_server(app) as url,
        httpx2.AsyncClient(timeout=10) as client,
    ):
        codes = []
        for i in range(10):
            async with client.stream(
                "POST", f"{url}/runs", json={"session_id": f"s{i}"}
            ) as response:
                async for sse in httpx2.EventSource(response):
                    if json.loads(sse.data)["scope"] == STREAM_END:
                        state = await client.get(f"{url}/runs/s{i}/state")
                        codes.append(state.status_code)
                        break
        assert codes == [200] * 10
        assert state.json()["state"]["messages"][-1]["content"] == "ticked 3"


async def test_the_state_of_a_run_still_going_is_409_at_once() -> None:
    app = sse_app(ticker(100_000, 0.01))
    async with (
        running_server(app) as url,
        httpx2.AsyncClient(timeout=10) as client,
    ):
        with trio.fail_after(10):
            async with client.stream(
                "POST", f"{url}/runs", json={"session_id": "going"}
            ) as response:
                async for sse in httpx2.EventSource(response):
                    if sse.id == "2":
                        break
                answer = await client.get(f"{url}/runs/going/state")
        assert answer.status_code == 409
        assert "still running" in answer.json()["error"]


# -------------------------------------------------------- runs nobody watches


class SlowToLoad(InMemoryCheckpointer):
    async def load_latest(self, session_id: str) -> Any:
        await trio.sleep(0.3)
        return await super().load_latest(session_id)


async def test_a_run_whose_client_left_at_once_is_not_listed_as_running() -> None:
    app = sse_app(ticker(100_000, 0.01), checkpointer=SlowToLoad())
    async with running_server(app) as url:
        body = b'{"session_id": "left"}'
        with trio.fail_after(10):
            async with RawClient.connect(url) as raw:
                await raw.send_head(
                    "POST", "/runs", {**JSON, "content-length": str(len(body))}
                )
                await raw.send_body(body)
                await _until(lambda: "left" in app.runs)
            # The client is gone while the session loads.
            await _until(lambda: app.runs["left"].done.is_set())
            await _until(lambda: app.active_requests == 0)
        async with httpx2.AsyncClient(timeout=10) as client:
            runs = (await client.get(f"{url}/runs")).json()["runs"]
        assert [(r["session_id"], r["status"]) for r in runs] == [("left", "cancelled")]


class Silent(App):
    """An App whose event streams lose the stream-end event (a runner bug)."""

    async def start_streaming(self, nursery: trio.Nursery, state: Any, **kw: Any):
        invocation, events = await super().start_streaming(nursery, state, **kw)
        return invocation, _WithoutEnd(events)


class _WithoutEnd:
    def __init__(self, events: Any) -> None:
        self.events = events

    def __enter__(self) -> _WithoutEnd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.events.close()

    def __aiter__(self) -> _WithoutEnd:
        return self

    async def __anext__(self) -> Any:
        while True:
            event = await self.events.__anext__()
            if not event.is_stream_end:
                return event
            await trio.sleep_forever()  # the stream never ends by itself


async def test_a_run_that_ends_without_its_sentinel_gets_one() -> None:
    plain = ticker(2)
    app = sse_app(Silent(plain.graph, plain.config))
    with trio.fail_after(10):
        client = await fetch(app, "POST", "/runs", {"session_id": "quiet"})
    found = client.frames()
    ends = [f for f in found if json.loads(f["data"])["scope"] == STREAM_END]
    assert len(ends) == 1 and ends[0] is found[-1]
    assert json.loads(ends[0]["data"])["metadata"]["status"] == "completed"
    assert app.runs["quiet"].status == "completed"


class Unstartable(App):
    """An App whose runs cannot start (say, a configuration it refuses)."""

    async def start_streaming(self, nursery: trio.Nursery, state: Any, **kw: Any):
        raise ConfigError("this run cannot start: no model configured")


async def test_a_run_that_cannot_start_still_ends_with_a_sentinel() -> None:
    plain = ticker(2)
    app = sse_app(Unstartable(plain.graph, plain.config))
    async with (
        running_server(app) as url,
        httpx2.AsyncClient(timeout=10) as client,
    ):
        with trio.fail_after(10):
            status, found = await read_stream(
                client, "POST", f"{url}/runs", json={"session_id": "broken"}
            )
        runs = (await client.get(f"{url}/runs")).json()["runs"]
    assert status == 200 and len(found) == 1
    end = sentinel(found)["metadata"]
    assert end["status"] == "error"
    assert "no model configured" in end["error"]
    assert [(r["session_id"], r["status"]) for r in runs] == [("broken", "error")]


# --------------------------------------------------------- replaying the store


async def test_a_stored_session_replays_page_by_page() -> None:
    store = InMemoryCheckpointer()
    await store_session(store, "paged", 40)
    total = (await store.query_steps("paged", limit=1)).total
    app = sse_app(ticker(), checkpointer=store)
    app.replay_page = 16  # three pages, the last one short
    whole = (await fetch(app, "GET", "/runs/paged/events")).frames()
    assert [int(f["id"]) for f in whole] == list(range(1, total + 2))
    steps = [int(json.loads(f["data"])["message"].split()[1][:-1]) for f in whole[:-1]]
    assert steps == sorted(steps) and len(set(steps)) == total
    end = json.loads(whole[-1]["data"])
    assert end["metadata"]["status"] == "completed"
    assert end["metadata"]["step"] == steps[-1]
    resumed = await fetch(
        app, "GET", "/runs/paged/events", headers={"Last-Event-ID": "17"}
    )
    assert [f["id"] for f in resumed.frames()] == [f["id"] for f in whole[17:]]
    done = await fetch(
        app, "GET", "/runs/paged/events", headers={"Last-Event-ID": str(total + 1)}
    )
    assert done.status == 204
    beyond = await fetch(
        app, "GET", "/runs/paged/events", headers={"Last-Event-ID": str(total + 2)}
    )
    assert beyond.status == 400


class OneConnection(SQLiteCheckpointer):
    """Every call waits for the one before, as on one shared connection.

    Reads and writes then queue together: the SQLite store as the review found
    it, or a PostgreSQL pool of one. Counts the step queries that arrive.
    """

    queries = 0

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._one = trio.Lock()
        self._owner: object = None

    @asynccontextmanager
    async def _hold(self) -> AsyncIterator[None]:
        if self._owner is trio.lowlevel.current_task():  # a call within a call
            yield
            return
        async with self._one:
            self._owner = trio.lowlevel.current_task()
            try:
                yield
            finally:
                self._owner = None


def _one_at_a_time(name: str) -> Any:
    async def method(self: OneConnection, *args: Any, **kw: Any) -> Any:
        if name == "query_steps":
            self.queries += 1
        async with self._hold():
            return await getattr(SQLiteCheckpointer, name)(self, *args, **kw)

    return method


for _name in (
    "load_latest",
    "query_steps",
    "list_sessions",
    "save",
    "save_many",
    "append",
    "save_pending",
    "save_with_concurrency_check",
    "delete_session",
):
    if hasattr(SQLiteCheckpointer, _name):
        setattr(OneConnection, _name, _one_at_a_time(_name))


async def test_replays_of_a_long_stored_session_do_not_starve_a_new_run(
    tmp_path: Path,
) -> None:
    replays = 8
    async with OneConnection(tmp_path / "replays.db") as store:
        await store_session(store, "long", 1000)
        app = sse_app({"tick": ticker(3)}, checkpointer=store)
        finished: list[int] = []
        limits = httpx2.Limits(max_connections=20)
        async with (
            running_server(app) as url,
            httpx2.AsyncClient(timeout=120, limits=limits) as client,
        ):
            with trio.fail_after(120):
                async with trio.open_nursery() as nursery:

                    async def replay(i: int) -> None:
                        status, found = await read_stream(
                            client, "GET", f"{url}/runs/long/events"
                        )
                        assert status == 200 and len(found) == 1002
                        finished.append(i)

                    for i in range(replays):
                        nursery.start_soon(replay, i)
                    await _until(lambda: store.queries >= 2)
                    await trio.sleep(0.2)  # the other replays queue up
                    status, found = await read_stream(
                        client, "POST", f"{url}/runs", json={"graph": "tick"}
                    )
                    done_before = len(finished)
                    nursery.cancel_scope.cancel()
        assert status == 200 and sentinel(found)["metadata"]["status"] == "completed"
        # Before paging, the run waited behind every replay (all 8 finished
        # first); now it slips in between pages.
        assert done_before <= replays // 2, done_before


# ---------------------------------------------------------------- memory bound


async def test_finished_runs_are_bounded_in_bytes() -> None:
    app = sse_app(
        ticker(50, size=20_000), max_log_bytes=256 << 10, max_finished_bytes=1 << 20
    )
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(20):  # 20 runs of 1 MB of events each
            client = await fetch(app, "POST", "/runs", {"session_id": f"m{i}"})
            assert client.frames()[-1]["event"] == "diagnostic"
            del client
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    sizes = [run.log.size for run in app.runs.values()]
    assert all(size <= (256 << 10) + 21_000 for size in sizes), sizes
    assert sum(sizes) <= (1 << 20) + 21_000, sum(sizes)
    assert held < 6 << 20, f"{held / 2**20:.1f} MiB held by 20 finished runs"


async def test_a_client_that_lost_events_to_the_memory_bound_is_told() -> None:
    app = sse_app(ticker(40, size=10_000), max_log_bytes=100_000)
    async with (
        running_server(app) as url,
        httpx2.AsyncClient(timeout=10) as client,
    ):
        _, live = await read_stream(
            client, "POST", f"{url}/runs", json={"session_id": "big"}
        )
        # The live client read at pace, nothing lost: node.start, the ticks,
        # node.end, step.end and the end (the step's updates are not asked for).
        assert len(live) == 44
        _, late = await read_stream(
            client, "GET", f"{url}/runs/big/events?modes=events,updates"
        )
    notice = json.loads(late[0]["data"])
    assert late[0]["event"] == "diagnostic" and "id" not in late[0]
    assert notice["scope"] == "serve.log_truncated"
    assert "to bound its memory" in notice["message"]
    dropped = json.loads(late[1]["data"])
    assert late[1]["event"] == "dropped"
    kept = [int(f["id"]) for f in late[2:]]
    assert kept == list(range(dropped["dropped"] + 1, 46))
    assert sentinel(late)["metadata"]["status"] == "completed"


async def test_an_option_out_of_range_is_refused() -> None:
    for bad in (
        {"body_timeout": 0},
        {"max_connections": 0},
        {"max_runs": -1},
        {"max_log_bytes": 1.5},
        {"client_roles": "user"},
        {"allowed_hosts": "localhost"},
        {"cors_origins": ["https://a.example/"]},
        {"authorize": 3},
    ):
        with pytest.raises(ConfigError):
            sse_app(ticker(), **bad)


async def _until(condition: Any, seconds: float = 10.0) -> None:
    """Poll ``condition`` (a state of the server, not a timing) until it holds."""
    with trio.fail_after(seconds):
        while not condition():  # noqa: ASYNC110 - nothing here could be waited on
            await trio.sleep(0.01)
