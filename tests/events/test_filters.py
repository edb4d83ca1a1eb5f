"""``EventBus.subscribe(types=..., scopes=...)``: a stream receives only what it
asked for, the sentinels always, and filtered-out events are not drops."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from bus_paths import PATHS, POLICIES, open_bus

from weavegraph import (
    END,
    INVOCATION_END_SCOPE,
    START,
    STREAM_END_SCOPE,
    DiagnosticEvent,
    Event,
    EventBus,
    GraphBuilder,
    LLMEvent,
    NodeContext,
    NodeEvent,
    StateSnapshot,
    VersionedState,
    open_runner,
)
from weavegraph.errors import EventBusConfigError
from weavegraph.lowlevel import stream_end_event

MIXED: list[Event] = [
    NodeEvent(scope="progress", message="p"),
    NodeEvent(scope="tool_call", message="t1"),
    NodeEvent(scope="tool_result", message="t2"),
    NodeEvent(scope="tooling", message="x"),
    DiagnosticEvent(scope="cache", message="c"),
    DiagnosticEvent(scope="tool_call", message="d"),
    LLMEvent(chunk="Hel", stream_id="a"),
    LLMEvent(chunk="lo", stream_id="a", is_final=True),
    LLMEvent(chunk="boom", is_final=True, metadata={"severity": "error"}),
    stream_end_event("it", "completed", 1, scope=INVOCATION_END_SCOPE),
    NodeEvent(scope="progress", message="q"),
    stream_end_event("it", "completed", 2),
]

EVERYTHING = ["p", "t1", "t2", "x", "c", "d", "Hel", "lo", "boom", "I", "q", "S"]
CASES = [
    ({}, EVERYTHING),
    ({"types": ["llm"]}, ["Hel", "lo", "boom", "I", "S"]),
    (
        {"types": {"node", "diagnostic"}},
        ["p", "t1", "t2", "x", "c", "d", "I", "q", "S"],
    ),
    ({"scopes": ["progress", "cache"]}, ["p", "c", "I", "q", "S"]),
    ({"scopes": ["tool_*"]}, ["t1", "t2", "d", "I", "S"]),
    ({"scopes": ["llm.*"]}, ["Hel", "lo", "boom", "I", "S"]),
    ({"scopes": ["llm.final", "llm.error"]}, ["lo", "boom", "I", "S"]),
    ({"scopes": ["*"]}, EVERYTHING),
    ({"types": ["node"], "scopes": ["tool_*"]}, ["t1", "t2", "I", "S"]),
    ({"types": (), "scopes": None}, ["I", "S"]),
    ({"scopes": []}, ["I", "S"]),
]


def short(event: Event) -> str:
    if event.scope_label == INVOCATION_END_SCOPE:
        return "I"
    if event.is_stream_end:
        return "S"
    return event.message


@pytest.mark.parametrize("path", PATHS)
async def test_each_stream_receives_what_its_filter_accepts(path: str) -> None:
    subs = [kwargs for kwargs, _ in CASES]
    async with open_bus(path, subs) as (bus, streams):
        for event in MIXED:
            bus.emit(event)
    for (kwargs, expected), stream in zip(CASES, streams, strict=True):
        assert [short(e) async for e in stream] == expected, kwargs
        assert stream.dropped == 0


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("policy", POLICIES)
async def test_filtered_out_events_are_not_drops_and_the_stream_still_ends(
    path: str, policy: str
) -> None:
    sub = {"capacity": 2, "overflow": policy, "types": ["llm"]}
    sub_stop = {**sub, "stop_at_stream_end": True}
    async with open_bus(path, [sub, sub_stop]) as (bus, [stream, stopping]):
        for i in range(100):  # never yields: 100 events for a buffer of 2
            bus.emit(NodeEvent(scope="tick", message=str(i)))
        bus.emit(LLMEvent(chunk="only", stream_id="a", is_final=True))
        bus.emit(stream_end_event("s", "completed", 1))
        await trio.testing.wait_all_tasks_blocked()
        assert [short(e) async for e in stopping] == ["only", "S"]  # bus still open
    assert [short(e) async for e in stream] == ["only", "S"]
    assert stream.dropped == stopping.dropped == 0
    assert bus.metrics().dropped == 0
    assert bus.metrics().published == 102


async def test_a_filtered_run_stream_shows_only_the_model_tokens() -> None:
    async def answer(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        ctx.emit("progress", "thinking")
        for token in ("Hel", "lo"):
            ctx.emit_llm_chunk("reply", token)
        ctx.emit_llm_final("reply")

    app = (
        GraphBuilder()
        .add_node("answer", answer)
        .add_edge(START, "answer")
        .add_edge("answer", END)
        .compile()
    )
    bus = EventBus()
    tokens = bus.subscribe(types=["llm"], stop_at_stream_end=True)
    async with open_runner(app, event_bus=bus) as runner:
        await runner.create_session("f", VersionedState())
        await runner.run_until_complete("f")
        got = [e async for e in tokens]
    assert [e.scope_label for e in got] == [
        "llm.chunk",
        "llm.chunk",
        "llm.final",
        STREAM_END_SCOPE,
    ]
    assert "".join(e.message for e in got[:-1]) == "Hello"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"types": "node"}, "collection of event types"),
        ({"types": ["node", "nodes"]}, "unknown event type 'nodes'.*diagnostic, llm"),
        ({"types": 3}, "collection of event types"),
        ({"scopes": "progress"}, "collection of scope labels"),
        ({"scopes": [""]}, "bad scope filter ''"),
        ({"scopes": ["a*b"]}, "bad scope filter 'a\\*b'.*at the end"),
        ({"scopes": ["**"]}, "bad scope filter"),
        ({"scopes": [3]}, "bad scope filter 3"),
    ],
)
def test_bad_filters_are_refused_with_a_clear_message(
    kwargs: dict[str, object], match: str
) -> None:
    bus = EventBus()
    with pytest.raises(EventBusConfigError, match=match):
        bus.subscribe(**kwargs)  # type: ignore[arg-type]
    assert bus.metrics().subscribers == 0


def test_listening_for_asks_whether_any_open_filter_could_take_the_events() -> None:
    lifecycle = ("node.start", "node.end", "step.end")
    bus = EventBus()
    assert not bus.listening_for("diagnostic", lifecycle)
    tokens = bus.subscribe(types=("llm",))
    prefixed = bus.subscribe(types=("diagnostic",), scopes=("tool_*",))
    assert bus.listening and not bus.listening_for("diagnostic", lifecycle)
    steps = bus.subscribe(scopes=("step.*",))
    assert bus.listening_for("diagnostic", lifecycle)
    assert not bus.listening_for("node", ("node.start",))  # a node event's scope
    assert bus.listening_for("llm", ("llm.chunk",))
    steps.close()
    assert not bus.listening_for("diagnostic", lifecycle)
    everything = bus.subscribe()
    assert bus.listening_for("node", ("anything",))
    for stream in (tokens, prefixed, everything):
        stream.close()
    assert not bus.listening_for("llm", ("llm.chunk",))


async def test_a_sink_takes_every_event_so_it_always_listens() -> None:
    from weavegraph import MemorySink

    bus = EventBus(sinks=[MemorySink()])
    assert bus.listening_for("diagnostic", ("node.start",))
    async with bus:
        pass
