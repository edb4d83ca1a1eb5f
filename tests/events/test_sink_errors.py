"""A failing sink is an ``event_bus.sink_error`` diagnostic that every stream and
every other sink sees, with structured metadata, even on the bus's last event;
it never stops the run or the other sinks."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from bus_paths import BROADCASTER_PATHS, open_bus

from weavegraph import (
    END,
    START,
    STREAM_END_SCOPE,
    DiagnosticEvent,
    Event,
    EventBus,
    GraphBuilder,
    MemorySink,
    NodeContext,
    NodeEvent,
    StateSnapshot,
    VersionedState,
    event_from_json,
    open_runner,
)
from weavegraph.lowlevel import stream_end_event

SINK_ERROR = "event_bus.sink_error"


def ev(i: int, scope: str = "s") -> NodeEvent:
    return NodeEvent(scope=scope, message=str(i), node_id="n", step=1)


class Broken:
    """A sink that fails on the events ``fails`` picks, and records what it saw."""

    def __init__(self, fails=lambda event: True, name: str | None = None) -> None:
        self.fails = fails
        self.seen: list[Event] = []
        if name is not None:
            self.name = name

    async def handle(self, event: Event) -> None:
        self.seen.append(event)
        await trio.lowlevel.checkpoint()
        if self.fails(event):
            raise OSError("disk full")


def reports(events: list[Event]) -> list[DiagnosticEvent]:
    return [
        e for e in events if isinstance(e, DiagnosticEvent) and e.scope == SINK_ERROR
    ]


@pytest.mark.parametrize("path", BROADCASTER_PATHS)
async def test_a_failure_is_a_structured_diagnostic_for_streams_and_other_sinks(
    path: str,
) -> None:
    broken = Broken(lambda e: e.scope_label == "s")
    memory = MemorySink()
    async with open_bus(path, [{}], sinks=[broken, memory]) as (bus, [stream]):
        for i in range(3):
            bus.emit(ev(i))
        bus.emit(ev(3, scope="other"))
    seen = [e async for e in stream]
    for events in (seen, memory.events):
        assert [e.scope_label for e in events].count("s") == 3
        found = reports(events)
        assert len(found) == 3
        assert found[0].message == "Broken: OSError: disk full"
        assert dict(found[0].metadata) == {
            "sink": "Broken",
            "sink_index": 0,
            "during": "handle",
            "error": "OSError: disk full",
            "error_type": "OSError",
            "event_scope": "s",
        }
        assert event_from_json(found[0].to_json_str()) == found[0]
    # A report comes after the event that failed; the sink never sees its own.
    scopes = [e.scope_label for e in memory.events]
    assert scopes.index(SINK_ERROR) > scopes.index("s")
    assert reports(broken.seen) == []
    assert [e.message for e in broken.seen] == ["0", "1", "2", "3"]


@pytest.mark.parametrize("path", BROADCASTER_PATHS)
async def test_a_failure_on_the_last_event_is_still_reported(path: str) -> None:
    # The bus is closing when the sink handles the sentinel: before, this was
    # only logged.
    broken = Broken(lambda e: e.is_stream_end)
    memory = MemorySink()
    async with open_bus(path, [{}], sinks=[broken, memory]) as (bus, [stream]):
        bus.emit(ev(0))
        bus.emit(stream_end_event("s1", "completed", 1))
    seen = [e async for e in stream]
    for events in (seen, memory.events):
        assert [e.scope_label for e in events] == ["s", STREAM_END_SCOPE, SINK_ERROR]
        assert events[-1].metadata["event_scope"] == STREAM_END_SCOPE
    assert bus.metrics().published == 3


@pytest.mark.parametrize("path", BROADCASTER_PATHS)
async def test_a_failing_aclose_reaches_the_streams(path: str) -> None:
    class FailsToClose(MemorySink):
        async def aclose(self) -> None:
            raise RuntimeError("flush failed")

    async with open_bus(path, [{}], sinks=[FailsToClose()]) as (bus, [stream]):
        bus.emit(ev(0))
    seen = [e async for e in stream]
    assert [e.scope_label for e in seen] == ["s", SINK_ERROR]
    assert seen[-1].message == "FailsToClose: RuntimeError: flush failed"
    assert seen[-1].metadata["during"] == "aclose"
    assert seen[-1].metadata["event_scope"] is None


async def test_sinks_that_always_fail_do_not_report_each_others_reports(
    autojump_clock: trio.testing.MockClock,
) -> None:
    first, second = Broken(name="first"), Broken(name="second")
    with trio.fail_after(60):  # virtual time: only an endless cascade reaches it
        async with open_bus("before-start", [{}], sinks=[first, second]) as (
            bus,
            [stream],
        ):
            for i in range(5):
                bus.emit(ev(i))
    seen = [e async for e in stream]
    found = reports(seen)
    assert sorted(r.metadata["sink"] for r in found) == ["first"] * 5 + ["second"] * 5
    assert {r.metadata["event_scope"] for r in found} == {"s"}
    # Each saw the five events and the other's five reports, and reported only
    # its failures on the events.
    assert len(first.seen) == len(second.seen) == 10


async def test_a_failing_sink_never_stops_a_run_or_the_other_sinks() -> None:
    async def talk(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        for i in range(3):
            ctx.emit("say", str(i))

    app = (
        GraphBuilder()
        .add_node("talk", talk)
        .add_edge(START, "talk")
        .add_edge("talk", END)
        .compile()
    )
    memory = MemorySink()
    broken = Broken(lambda e: e.type == "node" or e.is_stream_end)
    final = await app.invoke_with_sinks(VersionedState(), [broken, memory])
    assert isinstance(final, VersionedState)
    scopes = [
        e.scope_label for e in memory.events if e.type == "node" or e.is_stream_end
    ]
    assert scopes == ["say"] * 3 + [STREAM_END_SCOPE]
    found = reports(memory.events)
    assert [r.metadata["event_scope"] for r in found] == ["say"] * 3 + [
        STREAM_END_SCOPE
    ]
    assert memory.events[-1] is found[-1]  # reported while the run's bus closed


async def test_a_runner_stream_sees_a_sink_failure_after_the_runner_closes() -> None:
    async def talk(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        ctx.emit("say", "hi")

    app = (
        GraphBuilder()
        .add_node("talk", talk)
        .add_edge(START, "talk")
        .add_edge("talk", END)
        .compile()
    )
    bus = EventBus(sinks=[Broken(lambda e: e.is_stream_end)])
    async with open_runner(app, event_bus=bus) as runner:
        events = runner.event_stream()
        await runner.create_session("s", VersionedState())
        await runner.run_until_complete("s")
    seen = [
        e.scope_label
        async for e in events
        if e.type == "node" or e.is_stream_end or e.scope_label == SINK_ERROR
    ]
    assert seen == ["say", STREAM_END_SCOPE, SINK_ERROR]
