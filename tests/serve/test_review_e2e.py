"""Human review over real HTTP: hypercorn on 127.0.0.1:0, httpx2 as the client."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2
import pytest
import trio
from live import (
    STREAM_END,
    read_stream,
    reviewer,
    running_server,
    sentinel,
    two_reviewers,
)

from weavegraph import Checkpointer, PostgresCheckpointer, SQLiteCheckpointer

pytestmark = [
    pytest.mark.filterwarnings("ignore:Async generator:ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


@pytest.fixture(params=["sqlite", "postgres"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Checkpointer:
    if request.param == "sqlite":
        return SQLiteCheckpointer(tmp_path / "review.db")
    return PostgresCheckpointer(request.getfixturevalue("postgres_dsn"))


async def test_review_over_http(make_store: Checkpointer) -> None:
    async with (
        make_store as store,
        running_server(reviewer(), checkpointer=store, grace=5.0) as url,
        httpx2.AsyncClient(timeout=30) as client,
    ):
        status, found = await read_stream(
            client,
            "POST",
            f"{url}/runs",
            json={"session_id": "mail", "extra": {"to": "Ann"}},
        )
        assert status == 200
        end = sentinel(found)["metadata"]
        assert end["status"] == "interrupted"
        [asked] = end["interrupts"]

        state = (await client.get(f"{url}/runs/mail/state")).json()
        assert state["interrupts"] == [asked]
        assert asked["payload"]["draft"] == "Dear Ann, the report is ready."

        edited = await client.patch(
            f"{url}/runs/mail/state",
            json={"update": {"extra": {"draft": "Dear Ann, see attached."}}},
        )
        assert edited.status_code == 200, edited.text
        assert edited.json()["state"]["extra"]["draft"] == "Dear Ann, see attached."

        # The continuation streams while it runs; a second client attaches to it.
        seen: list[dict[str, Any]] = []
        watched: list[dict[str, Any]] = []
        async with client.stream(
            "POST", f"{url}/runs/mail/resume", json={"value": "yes"}
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            async for sse in httpx2.EventSource(response):
                seen.append({"id": sse.id, **json.loads(sse.data)})
                if len(seen) == 1:
                    async with client.stream(
                        "GET",
                        f"{url}/runs/mail/events",
                        headers={"Last-Event-ID": sse.id},
                    ) as other:
                        watched = [
                            {"id": e.id, **json.loads(e.data)}
                            async for e in httpx2.EventSource(other)
                        ]
        assert seen[-1]["scope"] == STREAM_END
        assert seen[-1]["metadata"]["status"] == "completed"
        assert [e["id"] for e in watched] == [e["id"] for e in seen[1:]]
        assert any(e["message"] == "sent: Dear Ann, see attached." for e in seen)

        history = (await client.get(f"{url}/runs/mail/history")).json()
        steps = [s["step"] for s in history["steps"]]
        assert steps[-1] == 0 and steps == sorted(steps, reverse=True)
        paused = state["step"]
        fork = await client.post(
            f"{url}/runs/mail/fork", json={"step": paused, "session_id": "mail-2"}
        )
        assert fork.status_code == 201, fork.text
        assert fork.json()["forked_from"] == {"session_id": "mail", "step": paused}
        listed = (await client.get(f"{url}/runs/mail-2/state")).json()
        assert listed["state"]["extra"] == {"to": "Ann"}

        # Refusals over the wire are JSON 4xx, never a 500.
        for method, path, body, code in (
            ("POST", "/runs/mail/resume", {"value": "again"}, 409),
            ("POST", "/runs/zzz/resume", {}, 404),
            ("PATCH", "/runs/mail/state", {"update": []}, 400),
            ("POST", "/runs/mail/fork", {"step": 0, "session_id": "mail-2"}, 409),
            ("GET", "/runs/mail/state?step=500", None, 404),
            ("GET", "/runs/mail/history?limit=many", None, 400),
        ):
            answer = await client.request(method, f"{url}{path}", json=body)
            assert answer.status_code == code, (method, path, answer.text)
            assert answer.headers["content-type"] == "application/json"
            assert answer.json()["error"]
        bad = await client.post(
            f"{url}/runs/mail/resume",
            content=b"{oops",
            headers={"content-type": "application/json"},
        )
        assert bad.status_code == 400


async def test_parallel_answers_over_http(tmp_path: Path) -> None:
    async with (
        SQLiteCheckpointer(tmp_path / "two.db") as store,
        running_server(two_reviewers(), checkpointer=store) as url,
        httpx2.AsyncClient(timeout=30) as client,
    ):
        _, found = await read_stream(
            client, "POST", f"{url}/runs", json={"session_id": "both"}
        )
        asked = sentinel(found)["metadata"]["interrupts"]
        values = {i["id"]: i["node"].upper() for i in asked}
        with trio.fail_after(20):
            status, found = await read_stream(
                client, "POST", f"{url}/runs/both/resume", json={"values": values}
            )
        assert status == 200
        assert sentinel(found)["metadata"]["status"] == "completed"
        state = (await client.get(f"{url}/runs/both/state")).json()
        assert state["state"]["extra"] == {"legal": "LEGAL", "tone": "TONE"}
