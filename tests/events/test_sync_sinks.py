"""Synchronous sinks (``handle_nowait``): called as each event is handed over,
in order, with no task of their own; closed once after their last event; their
failures reported like any sink's, never stopping the run."""

from __future__ import annotations

import pytest
import trio

from weavegraph import (
    END,
    START,
    EventBus,
    GraphBuilder,
    MemorySink,
    NodeContext,
    NodeEvent,
    NodePartial,
    StateSnapshot,
    VersionedState,
)
from weavegraph.events.sinks import SyncEventSink

SINK_ERROR = "event_bus.sink_error"


def ev(i: int) -> NodeEvent:
    return NodeEvent(scope="s", message=str(i), node_id="n", step=1)


class Recorder:
    """A synchronous sink that records what it saw, failing on ``fail_on``."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.seen: list[str] = []
        self.closed = 0
        self.fail_on = fail_on

    async def handle(self, event: object) -> None:
        raise AssertionError("the bus calls handle_nowait")

    def handle_nowait(self, event: NodeEvent) -> None:
        self.seen.append(event.message)
        if event.message == self.fail_on:
            raise OSError("disk full")

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()
        self.closed += 1


@pytest.mark.parametrize("beside", [False, True], ids=["alone", "beside-a-task-sink"])
async def test_a_sync_sink_sees_every_event_in_order_and_is_closed_once(
    beside: bool,
) -> None:
    sync = Recorder()
    memory = MemorySink()
    bus = EventBus(sinks=[sync, memory] if beside else [sync])
    assert isinstance(sync, SyncEventSink)
    async with bus:
        # Alone, it needs no task: the bus delivers inline.
        assert bus._inline is not beside
        assert bus.listening and bus.listening_for("diagnostic", ("node.start",))
        stream = bus.subscribe()
        for i in range(5):
            bus.emit(ev(i))
            if i == 2:
                await trio.lowlevel.checkpoint()
    assert sync.seen == ["0", "1", "2", "3", "4"] and sync.closed == 1
    assert [e.message async for e in stream] == sync.seen
    if beside:
        assert [e.message for e in memory.events] == sync.seen


async def test_a_failing_sync_sink_is_reported_and_keeps_receiving() -> None:
    broken = Recorder(fail_on="1")
    other = Recorder()
    memory = MemorySink()
    async with EventBus(sinks=[broken, other, memory]) as bus:
        stream = bus.subscribe()
        for i in range(3):
            bus.emit(ev(i))
    assert broken.seen == ["0", "1", "2"]  # it goes on receiving
    seen = [e async for e in stream]
    for events in (seen, memory.events):
        (report,) = [e for e in events if e.scope_label == SINK_ERROR]
        assert report.metadata["sink"] == "Recorder"
        assert report.metadata["sink_index"] == 0
        assert report.metadata["during"] == "handle"
        assert report.metadata["error"] == "OSError: disk full"
    # The other sink saw the report too, right after the event it is about.
    assert other.seen[:2] == ["0", "1"] and "OSError: disk full" in other.seen[2]
    assert other.seen[3:] == ["2"]
    assert broken.closed == other.closed == 1


async def test_a_run_feeds_a_sync_sink_every_event_and_its_sentinel() -> None:
    async def node(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        ctx.emit("work", ctx.node_id)
        await trio.lowlevel.checkpoint()
        return NodePartial()

    app = (
        GraphBuilder()
        .add_node("a", node)
        .add_node("b", node)
        .add_edge(START, "a")
        .add_edge("a", "b")
        .add_edge("b", END)
        .compile()
    )
    sync = Recorder()
    memory = MemorySink()
    await app.invoke_with_sinks(VersionedState.with_user_message("go"), [sync, memory])
    assert sync.seen == [e.message for e in memory.events]
    assert memory.events[-1].is_stream_end and sync.closed == 1
    labels = [e.scope_label for e in memory.events]
    assert labels.count("node.start") == 2 and labels.count("work") == 2
