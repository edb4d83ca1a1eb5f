"""Overflow policies at their edges: the sentinels always get through, lag warnings
carry the real counts, and ``emit_async`` lets a reader keep up whatever the
capacity. Every test runs on each delivery path (see ``bus_paths``)."""

from __future__ import annotations

import logging
import re

import pytest
import trio
import trio.testing
from bus_paths import PATHS, POLICIES, open_bus

from weavegraph import (
    END,
    INVOCATION_END_SCOPE,
    START,
    STREAM_END_SCOPE,
    EventBus,
    EventBusConfig,
    GraphBuilder,
    NodeContext,
    NodeEvent,
    RuntimeConfig,
    StateSnapshot,
    VersionedState,
    open_runner,
)
from weavegraph.lowlevel import stream_end_event


def ev(i: int) -> NodeEvent:
    return NodeEvent(scope="s", message=str(i), node_id="n", step=1)


def numbers(events: list) -> list[int]:
    return [int(e.message) for e in events if e.scope_label == "s"]


# ------------------------------------------------------------------- sentinels


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("policy", POLICIES)
async def test_a_full_buffer_still_receives_the_stream_end(
    path: str, policy: str, autojump_clock: trio.testing.MockClock
) -> None:
    # A long-lived bus (a runner's): the run ends while the reader is behind, and
    # the next run's events follow. The stream must still end at the sentinel.
    sub = {"capacity": 4, "overflow": policy, "stop_at_stream_end": True}
    async with open_bus(path, [sub]) as (bus, [stream]):
        for i in range(20):
            bus.emit(ev(i))
        bus.emit(stream_end_event("s1", "completed", 3))
        for i in range(20, 40):  # the next run on the same bus
            bus.emit(ev(i))
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(60):  # before the fix: drop_newest never ends
            got = [e async for e in stream]
        assert got[-1].is_stream_end
        assert got[-1].metadata["status"] == "completed"
    received = numbers(got)
    if policy == "drop_oldest":
        assert received == []  # the 20 later events pushed out every earlier one
        assert stream.dropped == 40 - 3  # three of the later ones wait behind it
    elif policy == "drop_newest":
        assert received == [0, 1, 2, 3]
        assert stream.dropped == 40 - 4
    else:
        assert received == list(range(20))
        assert stream.dropped == 0


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest"])
async def test_ordinary_events_never_push_out_a_sentinel(
    path: str, policy: str
) -> None:
    sub = {"capacity": 3, "overflow": policy}
    async with open_bus(path, [sub]) as (bus, [stream]):
        bus.emit(stream_end_event("it", "completed", 1, scope=INVOCATION_END_SCOPE))
        bus.emit(stream_end_event("it", "completed", 1))
        for i in range(50):
            bus.emit(ev(i))
        await trio.testing.wait_all_tasks_blocked()
    got = [e async for e in stream]
    scopes = [e.scope_label for e in got]
    assert scopes[:2] == [INVOCATION_END_SCOPE, STREAM_END_SCOPE]
    kept = numbers(got)
    assert kept == ([49] if policy == "drop_oldest" else [0])
    assert len(got) == 3  # the sentinels take room like any event
    assert stream.dropped == 49


@pytest.mark.parametrize("path", PATHS)
async def test_sentinels_are_kept_even_when_they_alone_fill_the_buffer(
    path: str,
) -> None:
    sub = {"capacity": 1, "overflow": "drop_newest"}
    async with open_bus(path, [sub]) as (bus, [stream]):
        for step in range(3):
            bus.emit(ev(step))
            bus.emit(
                stream_end_event("it", "completed", step, scope=INVOCATION_END_SCOPE)
            )
        await trio.testing.wait_all_tasks_blocked()
    got = [e async for e in stream]
    assert [e.scope_label for e in got] == ["s"] + [INVOCATION_END_SCOPE] * 3
    assert stream.dropped == 2


async def test_a_lagging_runner_stream_ends_at_the_runs_sentinel(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The runner's bus stays open after the run: only the sentinel ends the stream.
    async def burst(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        for i in range(100):
            ctx.emit("s", str(i))

    app = (
        GraphBuilder()
        .add_node("b", burst)
        .add_edge(START, "b")
        .add_edge("b", END)
        .compile()
    )
    bus = EventBus()
    # Only the node's events (and the sentinel, which always passes): whatever
    # else the runtime reports does not take buffer room.
    events = bus.subscribe(10, "drop_newest", stop_at_stream_end=True, scopes=["s"])
    async with open_runner(app, event_bus=bus) as runner:
        await runner.create_session("lag", VersionedState())
        await runner.run_until_complete("lag")
        with trio.fail_after(60):
            got = [e async for e in events]
        assert got[-1].is_stream_end
        # drop_newest kept the first buffer-full; the sentinel went in beyond it.
        assert numbers(got) == list(range(10))
        assert events.dropped == 90


@pytest.mark.parametrize("policy", POLICIES)
async def test_every_streamed_run_ends_with_its_sentinel(policy: str) -> None:
    async def burst(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        for i in range(200):
            ctx.emit("s", str(i))

    config = RuntimeConfig(event_bus=EventBusConfig(capacity=8, overflow=policy))
    app = (
        GraphBuilder()
        .add_node("b", burst)
        .add_edge(START, "b")
        .add_edge("b", END)
        .compile(config)
    )
    async with app.invoke_streaming(VersionedState()) as (run, events):
        await trio.testing.wait_all_tasks_blocked()  # the reader is far behind
        got = [e async for e in events]
        await run.join()
    assert got[-1].is_stream_end
    assert sum(e.is_stream_end for e in got) == 1
    ticks = numbers(got)
    assert ticks == sorted(set(ticks))
    assert len(got) + events.dropped >= 200 + 1  # every tick and the sentinel
    if policy == "block":
        assert ticks == list(range(200))


# ------------------------------------------------------------------ lag counts


def lag_counts(caplog: pytest.LogCaptureFixture) -> list[tuple[int, int]]:
    """``(dropped, total)`` of every lag warning so far, in order."""
    found = []
    for record in caplog.records:
        text = record.getMessage()
        if "event stream lagged; dropped events" in text:
            match = re.search(r"dropped=(\d+), total=(\d+)", text)
            assert match is not None, text
            found.append((int(match[1]), int(match[2])))
    return found


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest"])
async def test_lag_warning_counts_are_the_real_ones(
    path: str, policy: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="weavegraph.event_bus")
    async with open_bus(path, [{"capacity": 10, "overflow": policy}]) as (
        bus,
        [stream],
    ):
        for i in range(100):
            bus.emit(ev(i))
        await trio.testing.wait_all_tasks_blocked()
        assert stream.dropped == 90
        assert lag_counts(caplog) == []  # the burst lasts until the reader catches up
        for _ in range(10):
            await stream.receive()
        assert lag_counts(caplog) == [(90, 90)]

        for i in range(50):  # a second burst
            bus.emit(ev(i))
        await trio.testing.wait_all_tasks_blocked()
        for _ in range(10):
            await stream.receive()
        assert lag_counts(caplog) == [(90, 90), (40, 130)]

        for i in range(30):  # a third, still going when the stream is closed
            bus.emit(ev(i))
        await trio.testing.wait_all_tasks_blocked()
        stream.close()
        assert lag_counts(caplog) == [(90, 90), (40, 130), (20, 150)]
    assert bus.metrics().dropped == 150


@pytest.mark.parametrize("path", PATHS)
async def test_a_burst_still_going_when_the_bus_ends_is_logged_once(
    path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="weavegraph.event_bus")
    async with open_bus(path, [{"capacity": 5}]) as (bus, [stream]):
        for i in range(25):
            bus.emit(ev(i))
    assert lag_counts(caplog) == [(20, 20)]
    assert numbers([e async for e in stream]) == [20, 21, 22, 23, 24]
    assert lag_counts(caplog) == [(20, 20)]  # draining afterwards adds nothing


# -------------------------------------------------------- emit_async backpressure


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("capacity", [1, 16, 255, 256, 1024])
async def test_emit_async_lets_a_fast_reader_keep_up_whatever_the_capacity(
    path: str, policy: str, capacity: int
) -> None:
    n = 3000
    sub = {"capacity": capacity, "overflow": policy}
    async with open_bus(path, [sub, sub], capacity=capacity) as (bus, streams):
        got: list[list[int]] = [[], []]

        async def read(i: int) -> None:
            async for event in streams[i]:
                got[i].append(int(event.message))

        async with trio.open_nursery() as nursery:
            for i in range(2):
                nursery.start_soon(read, i)
            for i in range(n):
                await bus.emit_async(ev(i))
            bus.close()
    assert got == [list(range(n))] * 2
    assert [s.dropped for s in streams] == [0, 0]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest"])
async def test_emit_async_never_waits_for_a_lossy_reader_that_does_not_read(
    path: str, policy: str, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_bus(path, [{"capacity": 8, "overflow": policy}]) as (
        bus,
        [stream],
    ):
        with trio.fail_after(1):  # virtual time: only a hang could reach it
            for i in range(500):
                await bus.emit_async(ev(i))
    assert stream.dropped == 500 - 8
    assert len([e async for e in stream]) == 8


@pytest.mark.parametrize("policy", POLICIES)
async def test_ctx_emit_async_loses_nothing_for_a_fast_reader(policy: str) -> None:
    n = 2000

    async def producer(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        for i in range(n):
            await ctx.emit_async("s", str(i))

    config = RuntimeConfig(event_bus=EventBusConfig(capacity=16, overflow=policy))
    app = (
        GraphBuilder()
        .add_node("p", producer)
        .add_edge(START, "p")
        .add_edge("p", END)
        .compile(config)
    )
    async with app.invoke_streaming(VersionedState()) as (run, events):
        got = [e async for e in events]
        await run.join()
    assert numbers(got) == list(range(n))
    assert events.dropped == 0
    assert got[-1].is_stream_end


async def test_emit_async_waits_for_a_slow_lossless_reader(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with EventBus(capacity=4, overflow="block") as bus:
        stream = bus.subscribe()
        highest = 0

        async def slow() -> None:
            async for _ in stream:
                await trio.sleep(1)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow)
            start = trio.current_time()
            for i in range(40):
                await bus.emit_async(ev(i))
                highest = max(highest, stream.buffered)
            # The producer went at the reader's pace, never more than a buffer ahead.
            assert trio.current_time() - start >= 40 - 4 - 1
            bus.close()
    assert highest <= 4 + 1
    assert stream.dropped == 0
