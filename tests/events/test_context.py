"""`NodeContext`'s emitters: reserved scopes are refused, diagnostics carry
structured metadata, timestamps are whole microseconds, and an LLM stream's
pieces concatenate to its output."""

from __future__ import annotations

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from weavegraph import (
    DIAGNOSTIC_SCOPE,
    END,
    INVOCATION_END_SCOPE,
    START,
    STREAM_END_SCOPE,
    DiagnosticEvent,
    EventBus,
    GraphBuilder,
    LLMEvent,
    MemorySink,
    NodeContext,
    NodeEvent,
    RuntimeConfig,
    StateSnapshot,
    VersionedState,
    WorkflowError,
    event_from_json,
)
from weavegraph._runtime.lifecycle import LIFECYCLE_SCOPES
from weavegraph.errors import ReservedScopeError
from weavegraph.events.steps import STEP_ITEM_SCOPES
from weavegraph.lowlevel import stream_end_event

RESERVED = [
    STREAM_END_SCOPE,
    INVOCATION_END_SCOPE,
    DIAGNOSTIC_SCOPE,
    "__weavegraph_anything_new",
    "__weavegraph_",
]
ALLOWED = ["progress", "_private", "__dunder__", "__weavegraph", "weavegraph_x", ""]


@pytest.mark.parametrize("scope", RESERVED)
async def test_every_emitter_refuses_a_reserved_scope(scope: str) -> None:
    async with EventBus() as bus:
        stream = bus.subscribe()
        ctx = NodeContext("n", 1, "s", bus)
        with pytest.raises(ReservedScopeError) as info:
            ctx.emit(scope, "m")
        text = str(info.value)
        assert repr(scope) in text
        assert "reserved" in text and "'__weavegraph_'" in text
        assert "STREAM_END_SCOPE" in text and "pick another scope" in text
        with pytest.raises(ReservedScopeError, match="reserved"):
            await ctx.emit_async(scope, "m")
        with pytest.raises(ReservedScopeError, match="reserved"):
            ctx.emit_diagnostic(scope, "m", status="completed")
        assert bus.metrics().published == 0
    assert [e async for e in stream] == []


@given(st.text(max_size=20) | st.text(max_size=6).map(lambda t: "__weavegraph" + t))
def test_the_reserved_check_is_the_prefix_and_the_runtime_scopes(scope: str) -> None:
    bus = EventBus()  # not started: events just wait in it
    ctx = NodeContext("n", 1, "s", bus)
    # The prefix, and the runtime's own scopes (lifecycle events, stream-mode
    # items), which hypothesis also tries: it draws the code's constants.
    reserved = (
        scope.startswith("__weavegraph_")
        or scope in LIFECYCLE_SCOPES
        or scope in STEP_ITEM_SCOPES
    )
    for emit in (ctx.emit, ctx.emit_diagnostic):
        try:
            emit(scope, "m")
        except ReservedScopeError:
            assert reserved
        else:
            assert not reserved
    assert bus.metrics().published == (0 if reserved else 2)


@pytest.mark.parametrize("scope", ALLOWED)
async def test_other_scopes_are_fine(scope: str) -> None:
    async with EventBus() as bus:
        stream = bus.subscribe()
        ctx = NodeContext("n", 1, "s", bus)
        ctx.emit(scope, "a")
        await ctx.emit_async(scope, "b")
        ctx.emit_diagnostic(scope, "c")
    assert [(e.scope_label, e.message) async for e in stream] == [
        (scope, "a"),
        (scope, "b"),
        (scope, "c"),
    ]


async def test_the_runtimes_own_sentinel_still_goes_out() -> None:
    async with EventBus() as bus:
        stream = bus.subscribe(stop_at_stream_end=True)
        bus.emit(stream_end_event("s1", "completed", 2))
        got = [e async for e in stream]
    assert [e.is_stream_end for e in got] == [True]
    assert got[0].metadata["status"] == "completed"


async def test_a_node_cannot_end_the_streams_of_its_run() -> None:
    # Before: the fake sentinel ended every stream of the run at once, and the
    # events after it were never seen.
    async def spoof(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        ctx.emit("progress", "before")
        ctx.emit_diagnostic(STREAM_END_SCOPE, "session=x status=completed step=0")

    app = (
        GraphBuilder()
        .add_node("spoof", spoof)
        .add_edge(START, "spoof")
        .add_edge("spoof", END)
        .compile()
    )
    async with app.invoke_streaming(VersionedState()) as (run, events):
        got = [e async for e in events]
        with pytest.raises(WorkflowError, match="is reserved") as info:
            await run.join()
    assert isinstance(info.value.__cause__, ReservedScopeError)
    assert [e.scope_label for e in got if e.type == "node"] == ["progress"]
    assert [e.is_stream_end for e in got].count(True) == 1
    assert got[-1].is_stream_end
    assert got[-1].metadata["status"] == "error"
    assert "is reserved" in got[-1].metadata["error"]


async def test_emit_diagnostic_carries_structured_metadata() -> None:
    async with EventBus() as bus:
        stream = bus.subscribe()
        ctx = NodeContext("n", 1, "s", bus)
        ctx.emit_diagnostic("cache", "hit", key="user:1", size=3, tags=["a", "b"])
        ctx.emit_diagnostic("cache", "plain")
    hit, plain = [e async for e in stream]
    assert isinstance(hit, DiagnosticEvent)
    assert dict(hit.metadata) == {"key": "user:1", "size": 3, "tags": ["a", "b"]}
    assert hit.to_json()["metadata"] == {"key": "user:1", "size": 3, "tags": ["a", "b"]}
    assert event_from_json(hit.to_json_str()) == hit
    assert dict(plain.metadata) == {}


@pytest.mark.parametrize(
    ("raw", "rounded"),
    [
        (1234.5, 1234.5),
        (1_700_000_000.0000002, 1_700_000_000.0),
        (1_700_000_000.1234567, 1_700_000_000.123457),
        (0.0000016, 0.000002),
        (-1.0000004, -1.0),
    ],
)
async def test_every_emitter_stamps_whole_microseconds(
    raw: float, rounded: float
) -> None:
    async with EventBus() as bus:
        stream = bus.subscribe()
        ctx = NodeContext("n", 1, "s", bus, clock=lambda: raw)
        assert ctx.now() == rounded
        ctx.emit("a", "m", x=1)
        await ctx.emit_async("b", "m")
        ctx.emit_diagnostic("c", "m", y=2)
        ctx.emit_llm_chunk("s1", "Hel")
        ctx.emit_llm_final("s1")
        ctx.emit_llm_error("s2", "boom")
    got = [e async for e in stream]
    assert len(got) == 6
    for event in got:
        assert event.timestamp == rounded
        assert event_from_json(event.to_json()) == event
        assert event_from_json(event.to_json_str()) == event


async def test_default_timestamps_round_trip_exactly() -> None:
    # The real clock: before, its sub-microsecond digits were lost in the text.
    async with EventBus() as bus:
        stream = bus.subscribe()
        ctx = NodeContext("n", 1, "s", bus)
        for i in range(200):
            ctx.emit("tick", str(i))
            if i % 50 == 0:
                await trio.lowlevel.checkpoint()
        ctx.emit_llm_chunk("s", "x")
    built = [
        NodeEvent(scope="s"),
        DiagnosticEvent(scope="d"),
        LLMEvent(chunk="c"),
        stream_end_event("s", "completed", 1),
    ]
    for event in [*[e async for e in stream], *built]:
        assert event_from_json(event.to_json()) == event
        assert event_from_json(event.to_json_str()) == event


async def test_a_streamed_answer_concatenates_to_the_whole_output() -> None:
    # The final event is the last piece of the stream, not the whole text.
    async def answer(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        for token in ("Hello", ", ", "world"):
            ctx.emit_llm_chunk("reply", token)
        ctx.emit_llm_final("reply")  # nothing left to send
        ctx.emit_llm_chunk("short", "all at ")
        ctx.emit_llm_final("short", "once")  # the tail, sent with the end

    app = (
        GraphBuilder()
        .add_node("answer", answer)
        .add_edge(START, "answer")
        .add_edge("answer", END)
        .compile(RuntimeConfig())
    )
    sink = MemorySink()
    await app.invoke_with_sinks(VersionedState(), [sink])
    pieces: dict[str | None, list[str]] = {}
    for event in sink.events:
        if isinstance(event, LLMEvent):
            pieces.setdefault(event.stream_id, []).append(event.chunk)
    assert {k: "".join(v) for k, v in pieces.items()} == {
        "reply": "Hello, world",
        "short": "all at once",
    }
    finals = [e for e in sink.events if isinstance(e, LLMEvent) and e.is_final]
    assert [(e.stream_id, e.chunk) for e in finals] == [
        ("reply", ""),
        ("short", "once"),
    ]
