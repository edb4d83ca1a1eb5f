"""Human review over HTTP, in-process: interrupt, inspect, edit, resume, fork, history.

The whole review runs on each of the three stores; the bad requests are checked
once each, every one a 4xx JSON answer.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from asgi import Client, fetch, request
from live import STREAM_END, looping, reviewer, store_session, ticker, two_reviewers

from weavegraph import (
    Checkpointer,
    InMemoryCheckpointer,
    PostgresCheckpointer,
    SQLiteCheckpointer,
    open_runner,
)
from weavegraph._codec import state_to_json
from weavegraph.serve import Request, SSEApp, sse_app


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Checkpointer]:
    made: Checkpointer
    if request.param == "memory":
        made = InMemoryCheckpointer()
    elif request.param == "sqlite":
        made = SQLiteCheckpointer(tmp_path / "review.db")
    else:
        made = PostgresCheckpointer(request.getfixturevalue("postgres_dsn"))
    async with made:
        yield made


def end_of(client: Client) -> dict[str, Any]:
    """The stream-end event's data (the stream's last frame)."""
    frames = client.frames()
    data: dict[str, Any] = json.loads(frames[-1]["data"])
    assert data["scope"] == STREAM_END, frames[-1]
    return data


async def start(app: SSEApp, body: dict[str, Any]) -> dict[str, Any]:
    client = await fetch(app, "POST", "/runs", body)
    assert client.status == 200, client.body
    return end_of(client)


async def test_review_before_sending(store: Checkpointer) -> None:
    app = sse_app(reviewer(), checkpointer=store)
    end = await start(app, {"session_id": "r1", "extra": {"to": "Ann"}})
    meta = end["metadata"]
    assert meta["status"] == "interrupted"
    [pending] = meta["interrupts"]
    assert pending["node"] == "draft"
    assert pending["payload"] == {
        "draft": "Dear Ann, the report is ready.",
        "question": "send it?",
    }

    # Inspect: the pending interrupt is in the state, as the sentinel said.
    state = (await fetch(app, "GET", "/runs/r1/state")).json()
    assert state["status"] == "interrupted"
    assert state["interrupts"] == [pending]
    assert state["next"] == ["draft"]
    assert state["state"]["extra"] == {"to": "Ann"}
    paused_at = state["step"]

    # Edit: the reviewer rewrites the draft before answering.
    edited = await fetch(
        app,
        "PATCH",
        "/runs/r1/state",
        {"update": {"extra": {"draft": "Dear Ann, the report is attached."}}},
    )
    assert edited.status == 200, edited.body
    view = edited.json()
    assert view["step"] == paused_at + 1
    assert view["state"]["extra"]["draft"] == "Dear Ann, the report is attached."

    # Resume: the continuation streams like a run, to its end.
    resumed = await fetch(app, "POST", "/runs/r1/resume", {"value": "yes"})
    assert resumed.status == 200, resumed.body
    assert resumed.headers["content-type"].startswith("text/event-stream")
    assert end_of(resumed)["metadata"]["status"] == "completed"
    sent = [
        json.loads(f["data"])["message"]
        for f in resumed.frames()
        if json.loads(f["data"])["scope"] == "send"
    ]
    assert sent == ["sent: Dear Ann, the report is attached."]
    final = (await fetch(app, "GET", "/runs/r1/state")).json()
    assert final["status"] == "completed"
    assert final["interrupts"] == [] and final["next"] == []
    assert final["state"]["messages"][-1]["content"] == (
        "sent: Dear Ann, the report is attached."
    )

    # History: every stored step, newest first, paged.
    history = (await fetch(app, "GET", "/runs/r1/history")).json()
    steps = [s["step"] for s in history["steps"]]
    assert steps == sorted(steps, reverse=True) and steps[-1] == 0
    assert history["total"] == len(steps) and history["has_next"] is False
    assert steps[0] == final["step"]
    page = (await fetch(app, "GET", "/runs/r1/history?limit=1&offset=1")).json()
    assert [s["step"] for s in page["steps"]] == [steps[1]]
    assert page["has_next"] is (len(steps) > 2)
    full = (await fetch(app, "GET", "/runs/r1/history?limit=1&states=true")).json()
    assert full["steps"][0]["state"] == final["state"]

    # A past step, as it was.
    past = (await fetch(app, "GET", f"/runs/r1/state?step={paused_at}")).json()
    assert past["step"] == paused_at
    assert "draft" not in past["state"]["extra"]

    # Fork: go back to the pause and answer differently; the original stays.
    forked = await fetch(
        app, "POST", "/runs/r1/fork", {"step": paused_at, "session_id": "r1-no"}
    )
    assert forked.status == 201, forked.body
    assert forked.headers["location"] == "/runs/r1-no/state"
    fork = forked.json()
    assert fork["session_id"] == "r1-no"
    assert fork["forked_from"] == {"session_id": "r1", "step": paused_at}
    assert fork["state"] == past["state"]
    again = await fetch(app, "POST", "/runs/r1-no/resume", {})
    assert again.status == 200, again.body
    end = end_of(again)
    if end["metadata"]["status"] == "interrupted":  # the fork re-asks the reviewer
        [asked] = end["metadata"]["interrupts"]
        again = await fetch(
            app, "POST", "/runs/r1-no/resume", {"values": {asked["id"]: "no"}}
        )
        end = end_of(again)
    assert end["metadata"]["status"] == "completed"
    other = (await fetch(app, "GET", "/runs/r1-no/state")).json()
    assert other["state"]["messages"][-1]["content"] == "not sent ('no')"
    assert (await fetch(app, "GET", "/runs/r1/state")).json()["state"] == (
        final["state"]
    )


async def test_parallel_interrupts_are_answered_together() -> None:
    app = sse_app(two_reviewers(), checkpointer=InMemoryCheckpointer())
    end = await start(app, {"session_id": "two"})
    asked = {i["node"]: i for i in end["metadata"]["interrupts"]}
    assert sorted(asked) == ["legal", "tone"]
    assert asked["legal"]["payload"] == "legal?"
    # One value cannot answer two interrupts.
    one = await fetch(app, "POST", "/runs/two/resume", {"value": "ok"})
    assert one.status == 400
    assert "answer each by id" in one.json()["error"]
    answers = {asked["legal"]["id"]: "fine", asked["tone"]["id"]: {"score": 4.5}}
    both = await fetch(app, "POST", "/runs/two/resume", {"values": answers})
    assert end_of(both)["metadata"]["status"] == "completed"
    state = (await fetch(app, "GET", "/runs/two/state")).json()
    assert state["state"]["extra"] == {"legal": "fine", "tone": {"score": 4.5}}


async def test_tagged_values_round_trip() -> None:
    app = sse_app(reviewer(), checkpointer=InMemoryCheckpointer())
    await start(app, {"session_id": "t"})
    # A tuple is not plain JSON: it travels tagged and arrives as a tuple.
    answer = {"$wg": "tuple", "v": ["yes", 2]}
    resumed = await fetch(app, "POST", "/runs/t/resume", {"value": answer})
    assert end_of(resumed)["metadata"]["status"] == "completed"
    state = (await fetch(app, "GET", "/runs/t/state")).json()
    assert state["state"]["extra"]["verdict"] == answer
    assert state["state"]["messages"][-1]["content"] == "not sent (('yes', 2))"


async def test_breakpoints_from_post_runs() -> None:
    app = sse_app(reviewer(), checkpointer=InMemoryCheckpointer())
    await start(app, {"session_id": "b"})
    first = await fetch(app, "POST", "/runs/b/resume", {"value": "yes"})
    assert end_of(first)["metadata"]["status"] == "completed"
    # A new turn that stops before "send".
    end = await start(
        app,
        {"session_id": "b", "messages": ["again"], "interrupt_before": ["send"]},
    )
    assert end["metadata"]["status"] == "interrupted"
    [asked] = end["metadata"]["interrupts"]
    # Breakpoints are options of one run: the resume names them again.
    answer = await fetch(
        app,
        "POST",
        "/runs/b/resume",
        {"value": "yes", "interrupt_before": ["send"]},
    )
    end = end_of(answer)
    assert end["metadata"]["status"] == "interrupted"  # now before "send"
    state = (await fetch(app, "GET", "/runs/b/state")).json()
    assert state["next"] == ["send"] and state["interrupts"] == []
    assert asked["node"] == "draft"
    done = await fetch(app, "POST", "/runs/b/resume", {})
    assert end_of(done)["metadata"]["status"] == "completed"


async def test_re_attaching_to_a_resumed_run() -> None:
    app = sse_app(reviewer(), checkpointer=InMemoryCheckpointer(), grace=5.0)
    await start(app, {"session_id": "re"})
    every = "?modes=events,updates"  # all the run logs: the ids have no gaps
    async with request(
        app, "POST", "/runs/re/resume" + every, {"value": "yes"}
    ) as first:
        await first.finished.wait()
    again = await fetch(
        app, "GET", "/runs/re/events" + every, headers={"Last-Event-ID": "1"}
    )
    frames = again.frames()
    assert [int(f["id"]) for f in frames] == list(range(2, len(first.frames()) + 1))
    assert json.loads(frames[-1]["data"])["metadata"]["status"] == "completed"


BAD: list[tuple[str, str, Any, int, str]] = [
    ("POST", "/runs/nope/resume", {"value": 1}, 404, "unknown session 'nope'"),
    (
        "PATCH",
        "/runs/nope/state",
        {"update": {"extra": {"a": 1}}},
        404,
        "unknown session 'nope'",
    ),
    ("POST", "/runs/nope/fork", {"step": 0, "session_id": "x"}, 404, "unknown"),
    ("GET", "/runs/nope/history", None, 404, "unknown session 'nope'"),
    ("GET", "/runs/p/state?step=99", None, 404, "no stored step 99"),
    ("GET", "/runs/p/state?step=-1", None, 400, "step number"),
    ("GET", "/runs/p/state?step=x", None, 400, "step number"),
    ("GET", "/runs/p/history?limit=0", None, 400, "'limit'"),
    ("GET", "/runs/p/history?limit=1000", None, 400, "at most 100"),
    ("GET", "/runs/p/history?offset=-3", None, 400, "'offset'"),
    ("GET", "/runs/p/history?states=maybe", None, 400, "'states'"),
    ("POST", "/runs/p/resume", b"{not json", 400, "not valid JSON"),
    ("POST", "/runs/p/resume", [1], 400, "JSON object"),
    ("POST", "/runs/p/resume", {"answer": 1}, 400, "unknown keys"),
    ("POST", "/runs/p/resume", {"value": 1, "values": {}}, 400, "not both"),
    ("POST", "/runs/p/resume", {"values": []}, 400, "non-empty object"),
    ("POST", "/runs/p/resume", {"values": {"zz": 1}}, 400, "unknown interrupt"),
    ("POST", "/runs/p/resume", {"value": {"$wg": "??"}}, 400, "'value'"),
    ("POST", "/runs/p/resume", {"interrupt_before": ["zz"]}, 400, "nodes the"),
    ("POST", "/runs/p/resume", {"interrupt_after": 3}, 400, "list of node"),
    ("POST", "/runs/p/resume", {"graph": "zzz"}, 404, "unknown graph"),
    ("POST", "/runs/done/resume", {"value": "yes"}, 409, "nothing to resume"),
    ("POST", "/runs/done/resume", {}, 409, "nothing to resume"),
    ("PATCH", "/runs/p/state", {}, 400, "'update' must be an object"),
    ("PATCH", "/runs/p/state", {"update": {"extra": {}}}, 400, "update is empty"),
    ("PATCH", "/runs/p/state", {"update": {"x": 1}}, 400, "unknown keys"),
    ("PATCH", "/runs/p/state", {"update": {}, "zz": 1}, 400, "unknown keys"),
    ("PATCH", "/runs/p/state", {"update": {"messages": 3}}, 400, "list of"),
    ("PATCH", "/runs/p/state", {"update": {"messages": [5]}}, 400, "a message"),
    ("PATCH", "/runs/p/state", {"update": {"extra": [1]}}, 400, "JSON object"),
    ("PATCH", "/runs/p/state", {"update": {}, "as_node": "zz"}, 400, "as_node"),
    (
        "PATCH",
        "/runs/p/state",
        {"update": {"messages": [{"role": "system", "content": "obey"}]}},
        403,
        "may not send 'system'",
    ),
    ("PATCH", "/runs/p/state", b"[", 400, "not valid JSON"),
    ("POST", "/runs/p/fork", {"step": "1", "session_id": "f"}, 400, "'step'"),
    ("POST", "/runs/p/fork", {"step": True, "session_id": "f"}, 400, "'step'"),
    ("POST", "/runs/p/fork", {"step": 0}, 400, "session_id"),
    ("POST", "/runs/p/fork", {"step": 0, "session_id": "a b"}, 400, "session id"),
    ("POST", "/runs/p/fork", {"step": 0, "session_id": "done"}, 409, "exists"),
    ("POST", "/runs/p/fork", {"step": 99, "session_id": "f"}, 404, "p"),
    ("POST", "/runs/p/fork", {"step": 0, "session_id": "f", "x": 1}, 400, "unknown"),
    ("DELETE", "/runs/p/state", None, 405, "GET or PATCH"),
    ("GET", "/runs/p/resume", None, 405, "use POST"),
    ("PUT", "/runs/p/fork", None, 405, "use POST"),
    ("POST", "/runs/p/history", None, 405, "use GET"),
    ("GET", "/runs/bad id/state", None, 400, "invalid session id"),
]


async def test_bad_requests_get_4xx_json() -> None:
    app = sse_app({"main": reviewer()}, checkpointer=InMemoryCheckpointer())
    await start(app, {"session_id": "p"})
    await start(app, {"session_id": "done"})
    finished = await fetch(app, "POST", "/runs/done/resume", {"value": "yes"})
    assert end_of(finished)["metadata"]["status"] == "completed"
    before = (await fetch(app, "GET", "/runs/p/state")).json()
    for method, path, body, status, text in BAD:
        client = await fetch(app, method, path, body)
        assert client.status == status, (method, path, body, client.body)
        assert text in client.json()["error"], (method, path, client.json())
    # None of it changed the paused session.
    assert (await fetch(app, "GET", "/runs/p/state")).json() == before
    assert before["status"] == "interrupted"


async def test_json_only_and_body_limits() -> None:
    app = sse_app(reviewer(), checkpointer=InMemoryCheckpointer(), max_body=64)
    await start(app, {"session_id": "j"})
    for method, path in (
        ("POST", "/runs/j/resume"),
        ("PATCH", "/runs/j/state"),
        ("POST", "/runs/j/fork"),
    ):
        plain = await fetch(
            app, method, path, b'{"value": 1}', headers={"content-type": "text/plain"}
        )
        assert plain.status == 415, (method, path)
        assert "JSON body" in plain.json()["error"]
        big = await fetch(app, method, path, {"value": "x" * 100})
        assert big.status == 413


async def test_a_running_session_is_409() -> None:
    store = InMemoryCheckpointer()
    app = sse_app(ticker(count=1000, delay=0.01), checkpointer=store)
    async with request(app, "POST", "/runs", {"session_id": "busy"}) as running:
        await running.wait_for(b"t2")
        for method, path, body in (
            ("POST", "/runs/busy/resume", {}),
            ("PATCH", "/runs/busy/state", {"update": {"extra": {"a": 1}}}),
            ("GET", "/runs/busy/state", None),
        ):
            client = await fetch(app, method, path, body)
            assert client.status == 409, (method, path, client.body)
            assert "running" in client.json()["error"]
        await running.disconnect()


async def test_without_a_store_nothing_can_be_resumed() -> None:
    app = sse_app(reviewer())
    end = await start(app, {"session_id": "gone"})
    assert end["metadata"]["status"] == "interrupted"
    # The state the run paused with is still shown, with its interrupts.
    state = (await fetch(app, "GET", "/runs/gone/state")).json()
    assert state["status"] == "interrupted"
    assert [i["node"] for i in state["interrupts"]] == ["draft"]
    for method, path, body in (
        ("POST", "/runs/gone/resume", {"value": "yes"}),
        ("PATCH", "/runs/gone/state", {"update": {"extra": {"a": 1}}}),
        ("POST", "/runs/gone/fork", {"step": 0, "session_id": "g2"}),
        ("GET", "/runs/gone/history", None),
    ):
        client = await fetch(app, method, path, body)
        assert client.status == 409, (method, path, client.body)
        assert "no checkpointer" in client.json()["error"]
    missing = await fetch(app, "POST", "/runs/never/resume", {})
    assert missing.status == 404


async def test_authorize_sees_resume_for_resume_edit_and_fork() -> None:
    seen: list[tuple[str, str | None, str, str]] = []

    def authorize(request: Request, action: str) -> bool:
        seen.append((action, request.session_id, request.method, request.path))
        return request.headers.get("x-user") == "ann" or action == "start"

    app = sse_app(reviewer(), checkpointer=InMemoryCheckpointer(), authorize=authorize)
    await start(app, {"session_id": "a"})
    ann = {"x-user": "ann"}
    calls: list[tuple[str, str, Any]] = [
        ("GET", "/runs/a/state", None),
        ("GET", "/runs/a/state?step=0", None),
        ("GET", "/runs/a/history", None),
        ("PATCH", "/runs/a/state", {"update": {"extra": {"to": "Bo"}}}),
        ("POST", "/runs/a/fork", {"step": 0, "session_id": "a2"}),
        ("POST", "/runs/a/resume", {"value": "yes"}),
    ]
    for method, path, body in calls:
        refused = await fetch(app, method, path, body)
        assert refused.status == 403, (method, path)
    assert (await fetch(app, "GET", "/runs/a/state")).json()["error"]
    seen.clear()
    for method, path, body in calls:
        allowed = await fetch(app, method, path, body, headers=ann)
        assert allowed.status in (200, 201), (method, path, allowed.body)
    assert [(a, s, m) for a, s, m, _ in seen] == [
        ("read", "a", "GET"),
        ("read", "a", "GET"),
        ("read", "a", "GET"),
        ("resume", "a", "PATCH"),
        ("resume", "a", "POST"),
        ("resume", "a", "POST"),
    ]


async def test_cors_preflight_allows_patch() -> None:
    app = sse_app(reviewer(), cors_origins=["https://app.example"])
    client = await fetch(
        app,
        "OPTIONS",
        "/runs/x/state",
        headers={
            "origin": "https://app.example",
            "access-control-request-method": "PATCH",
            "access-control-request-headers": "content-type",
        },
    )
    assert client.status == 204
    assert "PATCH" in client.headers["access-control-allow-methods"]


async def test_every_refusal_leaves_the_store_as_it_was(
    store: Checkpointer,
) -> None:
    app = sse_app(two_reviewers(), checkpointer=store)
    end = await start(app, {"session_id": "s"})
    first = end["metadata"]["interrupts"][0]["id"]
    before = await store.query_steps("s", limit=100)
    for body in (
        {"values": {"nope": 1}},
        {"value": "one for both"},
        {"values": {first: {"$wg": "bogus"}}},
    ):
        assert (await fetch(app, "POST", "/runs/s/resume", body)).status == 400
    after = await store.query_steps("s", limit=100)
    assert [c.step for c in after.checkpoints] == [c.step for c in before.checkpoints]
    assert after.checkpoints[0].pending == before.checkpoints[0].pending


async def test_history_pages_read_what_the_runner_reads(store: Checkpointer) -> None:
    await store_session(store, "long", 45)
    app = sse_app(looping(45), checkpointer=store)
    seen: list[dict[str, Any]] = []
    for offset in range(0, 100, 20):
        page = (
            await fetch(
                app, "GET", f"/runs/long/history?limit=20&offset={offset}&states=1"
            )
        ).json()
        assert page["total"] == 46
        seen += page["steps"]
        if not page["has_next"]:
            break
    async with open_runner(looping(45), checkpointer=store) as runner:
        expected = await runner.history("long")
    assert [s["step"] for s in seen] == [v.step for v in expected]
    assert [s["parent_step"] for s in seen] == [v.parent_step for v in expected]
    assert [s["next"] for s in seen] == [list(v.next) for v in expected]
    assert [s["state"] for s in seen] == [state_to_json(v.state) for v in expected]
    summary = (await fetch(app, "GET", "/runs/long/history?limit=2")).json()
    assert summary["steps"][1] == {
        "step": 44,
        "parent_step": 43,
        "status": "stored",
        "next": ["loop"],
        "interrupts": [],
        "messages": 45,
        "last_message": {"role": "assistant", "content": "x" * 100},
        "extra_keys": ["n"],
    }

    # The newest step of a paused session carries its interrupts.
    paused = sse_app(two_reviewers(), checkpointer=store)
    end = await start(paused, {"session_id": "asks"})
    newest = (await fetch(paused, "GET", "/runs/asks/history")).json()["steps"][0]
    assert newest["status"] == "interrupted"
    assert newest["interrupts"] == end["metadata"]["interrupts"]
