"""Lifecycle events: every node attempt and step is visible in the stream."""

from __future__ import annotations

import pytest
import trio
from helpers import chain_app, hi

from weavegraph import (
    END,
    START,
    GraphBuilder,
    NodeContext,
    NodePartial,
    RetryPolicy,
    RuntimeConfig,
    StateSnapshot,
    WorkflowError,
    event_from_json,
)
from weavegraph.errors import ConfigError, ReservedScopeError
from weavegraph.testing import collect_events

LIFECYCLE = ("node.start", "node.end", "node.retry", "node.error", "step.end")


def lifecycle(events: list) -> list:  # type: ignore[type-arg]
    return [e for e in events if e.scope_label in LIFECYCLE]


async def test_every_node_attempt_and_step_is_an_event() -> None:
    app = chain_app(["a", "b"])  # on by default
    _, events = await collect_events(app, hi())
    seen = [
        (e.scope_label, e.metadata.get("node"), e.metadata["step"])
        for e in lifecycle(events)
    ]
    assert seen == [
        ("node.start", "a", 1),
        ("node.end", "a", 1),
        ("step.end", None, 1),
        ("node.start", "b", 2),
        ("node.end", "b", 2),
        ("step.end", None, 2),
    ]
    end = next(e for e in events if e.scope_label == "node.end")
    assert end.metadata["channels"] == ["messages"]
    assert end.metadata["attempt"] == 1 and end.metadata["task"] is None
    assert end.metadata["duration"] >= 0
    step = next(e for e in events if e.scope_label == "step.end")
    assert step.metadata["ran"] == ["a"] and step.metadata["next"] == ["b"]
    assert step.metadata["updated"] == ["messages"]
    for event in lifecycle(events):  # the JSON form round-trips exactly
        assert event_from_json(event.to_json()) == event


async def test_retries_and_errors_are_events_not_just_log_lines() -> None:
    attempts = 0

    async def flaky(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ValueError(f"try {attempts}")
        return NodePartial(extra={"ok": True})

    async def broken(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        raise RuntimeError("always")

    app = (
        GraphBuilder()
        .add_node("flaky", flaky, retry=RetryPolicy(max_attempts=3, backoff=0.01))
        .add_node("broken", broken)
        .add_edge(START, "flaky")
        .add_edge("flaky", "broken")
        .add_edge("broken", END)
        .compile(RuntimeConfig(lifecycle_events=True))
    )
    seen = []
    with pytest.raises(WorkflowError):
        async with app.invoke_streaming(hi()) as (run, events):
            seen = [e async for e in events]
            await run.join()
    retries = [e for e in seen if e.scope_label == "node.retry"]
    assert [e.metadata["attempt"] for e in retries] == [1, 2]
    assert retries[0].metadata["error"] == "ValueError: try 1"
    assert retries[0].metadata["delay"] == pytest.approx(0.01)
    starts = [e for e in seen if e.scope_label == "node.start"]
    assert [e.metadata["attempt"] for e in starts] == [1, 2, 3, 1]
    assert [e.message for e in starts] == [
        "flaky started",
        "flaky started (attempt 2)",
        "flaky started (attempt 3)",
        "broken started",
    ]
    ends = [e.message for e in seen if e.scope_label == "node.end"]
    assert ends == ["flaky finished"]
    (error,) = [e for e in seen if e.scope_label == "node.error"]
    assert error.metadata["node"] == "broken"
    assert error.metadata["error"] == "RuntimeError: always"


async def test_lifecycle_events_can_be_turned_off() -> None:
    app = chain_app(["a"], RuntimeConfig(lifecycle_events=False))
    _, events = await collect_events(app, hi())
    assert lifecycle(events) == []
    assert [e.is_stream_end for e in events] == [True]


def test_the_default_keeps_the_config_hash_of_stored_sessions() -> None:
    # The hash of the default configuration from before lifecycle events were
    # on by default: sessions stored then keep matching it.
    assert RuntimeConfig().lifecycle_events is True
    assert RuntimeConfig().config_hash == "d181b9f7122a4f081fe7ccd61a9ada16"
    off = RuntimeConfig(lifecycle_events=False).config_hash
    assert off != RuntimeConfig().config_hash


def test_the_flag_is_a_bool() -> None:
    with pytest.raises(ConfigError, match="lifecycle_events must be True or False"):
        RuntimeConfig(lifecycle_events=1)  # type: ignore[arg-type]


async def test_node_code_cannot_emit_lifecycle_scopes() -> None:
    caught: list[BaseException] = []

    async def liar(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        for scope in ("node.start", "step.end"):
            try:
                ctx.emit(scope, "fake")
            except ReservedScopeError as exc:
                caught.append(exc)
        await trio.lowlevel.checkpoint()

    app = (
        GraphBuilder()
        .add_node("liar", liar)
        .add_edge(START, "liar")
        .add_edge("liar", END)
        .compile()
    )
    await app.invoke(hi())
    assert len(caught) == 2 and "lifecycle" in str(caught[0])
