"""EventBus: fan-out, ordering, overflow policies, drops, sinks, closing."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

import pytest
import trio
import trio.lowlevel
import trio.testing

from weavegraph import (
    ChannelSink,
    DiagnosticEvent,
    Event,
    EventBus,
    EventBusClosed,
    EventBusConfig,
    JsonLinesSink,
    LoggingSink,
    MemorySink,
    NodeEvent,
    StdOutSink,
)
from weavegraph.errors import EventBusConfigError


def ev(i: int, scope: str = "s") -> NodeEvent:
    return NodeEvent(scope=scope, message=f"m{i}", node_id="n", step=1)


async def test_every_subscriber_sees_every_event_in_order() -> None:
    async with EventBus() as bus:
        a = bus.subscribe()
        b = bus.subscribe()
        for i in range(100):
            bus.emit(ev(i))
    for stream in (a, b):
        assert [e.message async for e in stream] == [f"m{i}" for i in range(100)]
        assert stream.dropped == 0


async def test_subscriber_only_sees_events_after_subscribing() -> None:
    async with EventBus() as bus:
        early = bus.subscribe()
        bus.emit(ev(0))
        await trio.testing.wait_all_tasks_blocked()
        late = bus.subscribe()
        bus.emit(ev(1))
    assert [e.message async for e in early] == ["m0", "m1"]
    assert [e.message async for e in late] == ["m1"]


async def test_per_producer_order_with_many_concurrent_producers() -> None:
    producers, per_producer = 20, 200
    async with EventBus(capacity=producers * per_producer) as bus:
        stream = bus.subscribe()

        async def produce(p: int) -> None:
            for i in range(per_producer):
                bus.emit(NodeEvent(scope=f"p{p}", message=str(i)))
                if i % 7 == 0:
                    await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            for p in range(producers):
                nursery.start_soon(produce, p)
    seen: dict[str, list[int]] = {}
    async for event in stream:
        seen.setdefault(event.scope_label, []).append(int(event.message))
    assert len(seen) == producers
    assert all(values == list(range(per_producer)) for values in seen.values())


async def test_drop_oldest_counts_exactly_and_keeps_the_newest() -> None:
    async with EventBus(capacity=10) as bus:
        stream = bus.subscribe()
        for i in range(35):
            bus.emit(ev(i))
        await trio.testing.wait_all_tasks_blocked()
        assert stream.dropped == 25
        assert bus.metrics().dropped == 25
    assert [e.message async for e in stream] == [f"m{i}" for i in range(25, 35)]


async def test_drop_newest_counts_exactly_and_keeps_the_oldest() -> None:
    async with EventBus(capacity=10, overflow="drop_newest") as bus:
        stream = bus.subscribe()
        for i in range(35):
            bus.emit(ev(i))
        await trio.testing.wait_all_tasks_blocked()
        assert stream.dropped == 25
    assert [e.message async for e in stream] == [f"m{i}" for i in range(10)]


async def test_stalled_consumer_received_plus_dropped_is_emitted() -> None:
    emitted = 5000
    async with EventBus(capacity=64) as bus:
        stream = bus.subscribe()
        for i in range(emitted):
            bus.emit(ev(i))
            if i % 100 == 0:
                await (
                    trio.lowlevel.checkpoint()
                )  # the broadcaster runs; the consumer does not
    received = [e async for e in stream]
    assert len(received) + stream.dropped == emitted
    assert len(received) == 64
    assert received[-1].message == f"m{emitted - 1}"


async def test_block_policy_loses_nothing_with_a_slow_consumer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    got: list[str] = []
    async with EventBus(capacity=4, overflow="block") as bus:
        stream = bus.subscribe()

        async def slow_consumer() -> None:
            async for event in stream:
                got.append(event.message)
                await trio.sleep(0.01)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_consumer)
            for i in range(200):
                bus.emit(ev(i))
            bus.close()
    assert got == [f"m{i}" for i in range(200)]
    assert stream.dropped == 0


async def test_emit_async_gives_backpressure_with_bounded_memory(
    autojump_clock: trio.testing.MockClock,
) -> None:
    peak = 0
    got = 0
    async with EventBus(capacity=8, overflow="block") as bus:
        stream = bus.subscribe()

        async def slow_consumer() -> None:
            nonlocal got
            async for _ in stream:
                got += 1
                await trio.sleep(0.001)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_consumer)
            for i in range(500):
                await bus.emit_async(ev(i))
                peak = max(peak, stream.buffered)
            bus.close()
    assert got == 500
    assert peak <= 8 + 1


async def test_lag_is_logged_once_per_burst(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="weavegraph.event_bus"):
        async with EventBus(capacity=2) as bus:
            stream = bus.subscribe()
            for i in range(10):
                bus.emit(ev(i))
            await trio.testing.wait_all_tasks_blocked()
            assert [e.message async for e in _take(stream, 2)] == ["m8", "m9"]
            for i in range(10):  # a second burst after catching up
                bus.emit(ev(i))
            await trio.testing.wait_all_tasks_blocked()
    # The first burst ended when the stream caught up, the second when its bus
    # ended (no more drops could come): one line each, with the real counts.
    assert lag_counts(caplog) == [(8, 8), (8, 16)]
    assert "event stream lagged; dropped events" in lag_lines(caplog)[0]


def lag_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if "event stream lagged" in r.getMessage()
    ]


def lag_counts(caplog: pytest.LogCaptureFixture) -> list[tuple[int, int]]:
    """``(dropped, total)`` of every lag warning, in order."""
    found = [
        re.search(r"dropped=(\d+), total=(\d+)", line) for line in lag_lines(caplog)
    ]
    return [(int(m[1]), int(m[2])) for m in found if m is not None]


async def _take(stream, n):
    for _ in range(n):
        yield await stream.receive()


async def test_metrics() -> None:
    async with EventBus(capacity=3) as bus:
        bus.subscribe()
        bus.subscribe()
        for i in range(5):
            bus.emit(ev(i))
        await trio.testing.wait_all_tasks_blocked()
        metrics = bus.metrics()
    assert metrics.capacity == 3
    assert metrics.published == 5
    assert metrics.dropped == 4
    assert metrics.subscribers == 2


async def test_closed_stream_is_detached_from_the_bus() -> None:
    async with EventBus() as bus:
        stream = bus.subscribe()
        await stream.aclose()
        bus.emit(ev(0))
        await trio.testing.wait_all_tasks_blocked()
        assert bus.metrics().subscribers == 0
        with pytest.raises(trio.ClosedResourceError):
            await stream.receive()


async def test_emit_after_close_raises_but_no_subscriber_is_fine() -> None:
    bus = EventBus()
    async with bus:
        bus.emit(ev(0))  # nobody listens: fine
    with pytest.raises(EventBusClosed, match="closed"):
        bus.emit(ev(1))
    with pytest.raises(trio.EndOfChannel):
        await bus.subscribe().receive()


async def test_next_timeout(autojump_clock: trio.testing.MockClock) -> None:
    async with EventBus() as bus:
        stream = bus.subscribe()
        assert await stream.next_timeout(1.0) is None

        async def later() -> None:
            await trio.sleep(0.5)
            bus.emit(ev(7))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(later)
            got = await stream.next_timeout(1.0)
        assert got is not None and got.message == "m7"
        bus.close()
        assert await stream.next_timeout(1.0) is None


async def test_receive_is_a_checkpoint_even_when_events_are_buffered() -> None:
    async with EventBus() as bus:
        stream = bus.subscribe()
        bus.emit(ev(0))
        await trio.testing.wait_all_tasks_blocked()
        with trio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(trio.Cancelled):
                await stream.receive()
        assert (await stream.receive()).message == "m0"  # nothing was lost


async def test_sinks_see_the_same_sequence_as_a_stream(tmp_path: Path) -> None:
    memory = MemorySink()
    send, receive = trio.open_memory_channel[Event](1000)
    text = io.StringIO()
    path = tmp_path / "events.jsonl"
    async with EventBus(
        sinks=[memory, ChannelSink(send), JsonLinesSink(path), StdOutSink(text)]
    ) as bus:
        stream = bus.subscribe()
        for i in range(50):
            bus.emit(ev(i))
        bus.emit(DiagnosticEvent(scope="done", message="bye"))
    expected = [e.message async for e in stream]
    assert [e.message for e in memory.events] == expected
    assert [e.message async for e in receive] == expected
    lines = path.read_text().splitlines()
    assert [json.loads(line)["message"] for line in lines] == expected
    assert text.getvalue().splitlines()[0] == "[n@1] m0"


async def test_failing_sink_is_reported_and_never_stops_the_others() -> None:
    class Broken:
        async def handle(self, event: Event) -> None:
            if event.scope_label == "s":
                raise OSError("disk full")

    memory = MemorySink()
    async with EventBus(sinks=[Broken(), memory]) as bus:
        for i in range(3):
            bus.emit(ev(i))
        await trio.testing.wait_all_tasks_blocked()
    scopes = [e.scope_label for e in memory.events]
    assert scopes.count("s") == 3
    errors = [e for e in memory.events if e.scope_label == "event_bus.sink_error"]
    assert len(errors) == 3
    assert "Broken: OSError: disk full" in errors[0].message


async def test_logging_sink(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="weavegraph.events"):
        async with EventBus(sinks=[LoggingSink()]) as bus:
            bus.emit(ev(1, scope="progress"))
    assert "progress: [n@1] m1" in caplog.text


def test_bus_configuration_is_validated() -> None:
    with pytest.raises(EventBusConfigError, match="capacity"):
        EventBus(capacity=0)
    with pytest.raises(EventBusConfigError, match="overflow"):
        EventBus(overflow="drop_everything")  # type: ignore[arg-type]
    with pytest.raises(EventBusConfigError):
        EventBusConfig(capacity=-1)
    assert EventBusConfig().capacity == 1024
