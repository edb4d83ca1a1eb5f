"""Lifecycle events: every node attempt and step is visible in the stream."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from helpers import chain_app, hi

from weavegraph import (
    END,
    START,
    STREAM_END_SCOPE,
    GraphBuilder,
    NodeContext,
    NodePartial,
    RetryPolicy,
    RuntimeConfig,
    Send,
    StateSnapshot,
    WorkflowError,
    event_from_json,
    open_runner,
)
from weavegraph._runtime import lifecycle as lifecycle_module
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


async def test_nothing_is_built_while_nobody_listens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[str] = []
    for name in ("node_start", "node_end", "step_end"):
        real = getattr(lifecycle_module, name)

        def spy(*args: Any, _real: Any = real, _name: str = name) -> Any:
            built.append(_name)
            return _real(*args)

        monkeypatch.setattr(lifecycle_module, name, spy)
    app = chain_app(["a", "b"])
    await app.invoke(hi())  # no stream, no sink
    assert built == []
    await collect_events(app, hi())  # a sink listens
    assert built == ["node_start", "node_end", "step_end"] * 2


async def test_nothing_is_built_for_streams_whose_filter_refuses_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[str] = []
    for name in ("node_start", "node_end", "step_end"):
        real = getattr(lifecycle_module, name)

        def spy(*args: Any, _real: Any = real, _name: str = name) -> Any:
            built.append(_name)
            return _real(*args)

        monkeypatch.setattr(lifecycle_module, name, spy)
    app = chain_app(["a", "b"])
    # An ``updates`` stream and a token stream could not receive them.
    async with app.invoke_streaming(hi(), modes="updates") as (run, items):
        updates = [item async for item in items]
        await run.join()
    assert built == [] and len(updates) == 3  # two steps, then the sentinel
    async with open_runner(app) as runner:
        tokens = runner.event_bus.subscribe(stop_at_stream_end=True, types=("llm",))
        await runner.create_session("s", hi())
        await runner.run_until_complete("s")
        assert [e.scope_label async for e in tokens] == [STREAM_END_SCOPE]
    assert built == []
    # A stream that keeps one lifecycle scope gets it: they are built again.
    async with open_runner(app) as runner:
        ends = runner.event_bus.subscribe(stop_at_stream_end=True, scopes=("step.end",))
        await runner.create_session("s", hi())
        await runner.run_until_complete("s")
        got = [e.metadata.get("step") async for e in ends]
    assert got[:2] == [1, 2] and built == ["node_start", "node_end", "step_end"] * 2


async def test_a_lifecycle_event_behaves_as_a_plain_diagnostic() -> None:
    import copy
    import pickle

    import attrs

    from weavegraph import DiagnosticEvent

    _, events = await collect_events(chain_app(["a"]), hi())
    start, end, step = lifecycle(events)
    for event in (start, end, step):
        plain = event_from_json(event.to_json())
        assert type(plain) is DiagnosticEvent
        assert plain == event and event == plain
        assert [plain].count(event) == 1 and event in [plain]
        assert repr(plain) == repr(event)
        assert pickle.loads(pickle.dumps(event)) == event
        assert copy.copy(event) == event
        assert isinstance(event, DiagnosticEvent) and event.type == "diagnostic"
    changed = attrs.evolve(start, message="other")
    assert changed.message == "other" and changed.metadata == start.metadata
    assert changed != start
    assert start.metadata is start.metadata  # made once, then kept
    # A buffered node.end holds no node output alive, only channel names.
    import gc

    held = gc.get_referents(*gc.get_referents(end))
    assert not any(isinstance(obj, NodePartial) for obj in held)
    assert end.metadata["channels"] == ["messages"]


async def test_sent_tasks_and_timeouts_in_lifecycle_events(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def plan(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        return None

    async def work(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        if ctx.payload == "slow":
            await trio.sleep(10)

    app = (
        GraphBuilder()
        .add_node("plan", plan)
        .add_node("work", work, timeout=1.0)
        .add_edge(START, "plan")
        .add_conditional_edge(
            "plan", lambda s: [Send("work", p) for p in ("ok", "slow")]
        )
        .add_edge("work", END)
        .compile()
    )
    seen = []
    with pytest.raises(WorkflowError, match="timed out"):
        async with app.invoke_streaming(hi()) as (run, events):
            seen = [e async for e in events]
            await run.join()
    step2 = [
        (e.scope_label, e.metadata["task"])
        for e in lifecycle(seen)
        if e.metadata.get("step") == 2 and e.scope_label != "step.end"
    ]
    assert step2 == [
        ("node.start", 0),
        ("node.end", 0),
        ("node.start", 1),
        ("node.error", 1),
    ]
    (error,) = [e for e in seen if e.scope_label == "node.error"]
    assert error.metadata["error"] == "node 'work' timed out after 1s"


async def test_a_subscriber_can_keep_only_lifecycle_events() -> None:
    async def talk(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        for i in range(3):
            ctx.emit_llm_chunk("s", f"t{i}")
        ctx.emit_llm_final("s")

    app = (
        GraphBuilder()
        .add_node("talk", talk)
        .add_edge(START, "talk")
        .add_edge("talk", END)
        .compile()
    )
    async with open_runner(app) as runner:
        bus = runner.event_bus
        only = bus.subscribe(stop_at_stream_end=True, scopes=("node.*", "step.end"))
        tokens = bus.subscribe(stop_at_stream_end=True, types=("llm",))
        await runner.create_session("s", hi())
        await runner.run_until_complete("s")
        kept = [e.scope_label async for e in only]
        chunks = [e.scope_label async for e in tokens]
    assert kept == ["node.start", "node.end", "step.end", STREAM_END_SCOPE]
    assert chunks == ["llm.chunk"] * 3 + ["llm.final", STREAM_END_SCOPE]
