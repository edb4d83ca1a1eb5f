"""invoke_streaming / start_streaming / invoke_with_channel / stream_sync."""

from __future__ import annotations

import gc

import pytest
import trio
import trio.testing
from helpers import chain_app, drain, hi

from weavegraph import (
    END,
    START,
    STREAM_END_SCOPE,
    DiagnosticEvent,
    GraphBuilder,
    NodeContext,
    NodeEvent,
    RunCancelledError,
    RuntimeConfig,
    StateSnapshot,
    WorkflowError,
)


def emitter_app(count: int = 3, delay: float = 0.0, lifecycle: bool = False):
    """One node emitting ``count`` ticks; only the node's own events and the
    sentinel reach the stream unless ``lifecycle`` (these tests are about
    delivery, and count events)."""

    async def emit(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        for i in range(count):
            ctx.emit("tick", f"t{i}", index=i)
            if delay:
                await trio.sleep(delay)

    return (
        GraphBuilder()
        .add_node("emit", emit)
        .add_edge(START, "emit")
        .add_edge("emit", END)
        .compile(RuntimeConfig(lifecycle_events=lifecycle))
    )


async def test_invoke_streaming_yields_events_then_exactly_one_sentinel() -> None:
    app = emitter_app(lifecycle=True)
    async with app.invoke_streaming(hi()) as (invocation, events):
        received = [event async for event in events]
        final = await invocation.join()
    # The node's events between its lifecycle events, then the step's end.
    assert [e.scope_label for e in received[:-1]] == [
        "node.start",
        "tick",
        "tick",
        "tick",
        "node.end",
        "step.end",
    ]
    ticks = received[1:4]
    assert [e.message for e in ticks] == ["t0", "t1", "t2"]
    assert all(isinstance(e, NodeEvent) for e in ticks)
    assert all(isinstance(e, DiagnosticEvent) for e in received[4:])
    end = received[-1]
    assert isinstance(end, DiagnosticEvent)
    assert end.scope == STREAM_END_SCOPE
    assert end.message == f"session={invocation.session_id} status=completed step=1"
    assert invocation.done and not invocation.cancelled
    assert final.messages[0].content == "hi"


async def test_leaving_the_block_early_cancels_the_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = emitter_app(count=1000, delay=1.0)
    async with app.invoke_streaming(hi()) as (invocation, events):
        first = await events.receive()
        assert first.message == "t0"
    # The block waited for the run to unwind: nothing is left running.
    assert invocation.done
    assert invocation.cancelled
    with pytest.raises(RunCancelledError):
        await invocation.join()
    assert trio.current_time() < 5


async def test_invocation_cancel_emits_a_cancelled_sentinel(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = emitter_app(count=1000, delay=1.0)
    async with app.invoke_streaming(hi()) as (invocation, events):
        await events.receive()
        invocation.cancel()
        rest = [event async for event in events]
    assert rest[-1].is_stream_end
    assert "status=cancelled" in rest[-1].message
    assert sum(e.is_stream_end for e in rest) == 1


async def test_start_streaming_in_a_callers_nursery() -> None:
    async with trio.open_nursery() as nursery:
        invocation, events = await chain_app(["A", "B"]).start_streaming(nursery, hi())
        received = [event async for event in events]
        final = await invocation.join()
    assert [m.content for m in final.messages] == ["hi", "A", "B"]
    assert received[-1].is_stream_end


async def test_failed_run_keeps_its_error_for_join_and_never_crashes_the_nursery() -> (
    None
):
    async def bad(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        ctx.emit("before", "x")
        raise ValueError("nope")

    app = (
        GraphBuilder()
        .add_node("bad", bad)
        .add_edge(START, "bad")
        .add_edge("bad", END)
        .compile()
    )
    async with app.invoke_streaming(hi()) as (invocation, events):
        received = [event async for event in events]
        with pytest.raises(WorkflowError, match="ValueError: nope"):
            await invocation.join()
    assert [e.scope_label for e in received] == [
        "node.start",
        "before",
        "node.error",
        STREAM_END_SCOPE,
    ]
    assert received[2].metadata["error"] == "ValueError: nope"
    assert "status=error step=1 error=ValueError: nope" in received[-1].message


async def test_exception_in_the_block_propagates_unwrapped() -> None:
    with pytest.raises(KeyError):
        async with emitter_app().invoke_streaming(hi()):
            raise KeyError("mine")


async def test_outer_cancellation_reaches_the_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = emitter_app(count=1000, delay=1.0)
    with trio.move_on_after(3.5) as scope:
        async with app.invoke_streaming(hi()) as (invocation, events):
            async for _ in events:
                pass
    assert scope.cancelled_caught
    assert invocation.cancelled


async def test_invoke_with_channel_holds_every_event() -> None:
    final, channel = await emitter_app(count=2000).invoke_with_channel(hi())
    events = await drain(channel)
    assert [e.message for e in events[:-1]] == [f"t{i}" for i in range(2000)]
    assert events[-1].is_stream_end
    assert final.messages[0].content == "hi"


def test_stream_sync_yields_events_in_a_plain_loop() -> None:
    events = list(emitter_app().stream_sync(hi()))
    assert [e.message for e in events[:-1]] == ["t0", "t1", "t2"]
    assert events[-1].is_stream_end


def test_stream_sync_break_cancels_the_run() -> None:
    stream = emitter_app(count=10_000, delay=0.01).stream_sync(hi())
    first = next(stream)
    assert first.message == "t0"
    stream.close()  # what ``break`` does to a for loop's generator
    gc.collect()


def test_stream_sync_raises_the_runs_error_after_the_sentinel() -> None:
    async def bad(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        raise ValueError("nope")

    app = (
        GraphBuilder()
        .add_node("bad", bad)
        .add_edge(START, "bad")
        .add_edge("bad", END)
        .compile()
    )
    seen = []
    with pytest.raises(WorkflowError):
        seen.extend(app.stream_sync(hi()))
    assert seen[-1].is_stream_end
