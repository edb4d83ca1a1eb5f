"""EventBus accounting and memory: nothing unaccounted for, nothing unbounded.

Every test runs on the three ways a bus delivers: streams subscribed before the
bus starts (its broadcaster task fans out whole batches), streams subscribed
inside ``async with EventBus()`` of a bus that had none (``emit`` delivers
inline, no task), and streams subscribed inside the block of a bus whose
broadcaster runs for a sink. Scheduling varies from run to run (trio shuffles
ready tasks); the properties asserted hold for every order.
"""

from __future__ import annotations

import functools
import logging
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.lowlevel

from weavegraph import Event, EventBus, EventStream, MemorySink, NodeEvent

PATHS = ("before-start", "inline", "beside-a-sink")
# A sink's subscription is lossless, so beside a sink a producer that never
# yields fills the sink's backlog by design: the lossy memory bound is a property
# of the other two paths.
LOSSY_PATHS = ("before-start", "inline")


class DiscardSink:
    """A sink that keeps nothing (memory tests must not hold the events)."""

    def __init__(self) -> None:
        self.seen = 0

    async def handle(self, event: Event) -> None:
        self.seen += 1


@asynccontextmanager
async def started_bus(
    path: str, overflows: list[str], *, capacity: int, sink: Any = None
) -> AsyncIterator[tuple[EventBus, list[EventStream]]]:
    """A running bus and one stream per entry of ``overflows``, subscribed the
    way ``path`` says."""
    sinks = [sink if sink is not None else MemorySink()]
    bus = EventBus(capacity=capacity, sinks=sinks if path == "beside-a-sink" else ())

    def subscribe() -> list[EventStream]:
        return [bus.subscribe(overflow=policy) for policy in overflows]  # type: ignore[arg-type]

    streams = subscribe() if path == "before-start" else []
    async with bus:
        if path != "before-start":
            streams = subscribe()
        yield bus, streams


def event(i: int) -> NodeEvent:
    return NodeEvent(scope="s", message=str(i), node_id="n", step=1)


async def produce(
    bus: EventBus, n: int, *, yield_every: int, make: Callable[[int], Event] = event
) -> None:
    """Emit ``n`` events, checkpointing every ``yield_every`` (0: never)."""
    for i in range(n):
        bus.emit(make(i))
        if yield_every and i % yield_every == 0:
            await trio.lowlevel.checkpoint()


async def read_all(stream: EventStream, into: list[int], slowness: int) -> None:
    """Read to the end, yielding ``slowness`` times after each event."""
    async for got in stream:
        into.append(int(got.message))
        for _ in range(slowness):
            await trio.lowlevel.checkpoint()


async def run_readers(
    streams: list[EventStream], producer: Callable[[], Awaitable[None]], bus: EventBus
) -> list[list[int]]:
    """Readers of different speeds (reader i yields i times per event) while
    ``producer`` runs; the bus closes when it is done."""
    received: list[list[int]] = [[] for _ in streams]
    async with trio.open_nursery() as nursery:
        for i, stream in enumerate(streams):
            nursery.start_soon(read_all, stream, received[i], i)
        await producer()
        bus.close()
    return received


# ----------------------------------------------------------------- accounting


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest"])
@pytest.mark.parametrize("yield_every", [0, 7, 300])
async def test_lossy_received_plus_dropped_is_exactly_published(
    path: str, policy: str, yield_every: int
) -> None:
    n = 2000
    async with started_bus(path, [policy] * 3, capacity=16) as (bus, streams):
        received = await run_readers(
            streams, lambda: produce(bus, n, yield_every=yield_every), bus
        )
    metrics = bus.metrics()
    assert metrics.published == n
    for got, stream in zip(received, streams, strict=True):
        assert len(got) + stream.dropped == n
        assert got == sorted(set(got))  # in emission order, none twice
        if policy == "drop_oldest":
            assert got[-1] == n - 1  # the newest event is never the one dropped
        else:
            assert got[:16] == list(range(16))  # the first buffer-full is kept
    assert sum(s.dropped for s in streams) == metrics.dropped
    if yield_every == 0:  # nobody read while 2000 events went into 16 slots
        assert all(s.dropped == n - 16 for s in streams)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "style", ["emit, never yields", "emit + checkpoint/5", "emit_async"]
)
async def test_block_delivers_every_event_to_every_reader_in_order(
    path: str, style: str
) -> None:
    n = 3000

    async def producer(bus: EventBus) -> None:
        if style == "emit_async":
            for i in range(n):
                await bus.emit_async(event(i))
        else:
            await produce(bus, n, yield_every=0 if "never" in style else 5)

    async with started_bus(path, ["block"] * 3, capacity=8) as (bus, streams):
        received = await run_readers(streams, lambda: producer(bus), bus)
    assert received == [list(range(n))] * 3
    assert [s.dropped for s in streams] == [0, 0, 0]
    assert bus.metrics().dropped == 0
    assert bus.metrics().published == n


@pytest.mark.parametrize("path", PATHS)
async def test_policies_on_one_bus_do_not_affect_each_other(path: str) -> None:
    n = 2000
    policies = ["block", "drop_oldest", "drop_newest"]
    async with started_bus(path, policies, capacity=8) as (bus, streams):
        received = await run_readers(
            streams, lambda: produce(bus, n, yield_every=3), bus
        )
    block, oldest, newest = received
    assert block == list(range(n)) and streams[0].dropped == 0
    for got, stream in ((oldest, streams[1]), (newest, streams[2])):
        assert len(got) + stream.dropped == n
        assert got == sorted(set(got))
    assert bus.metrics().dropped == streams[1].dropped + streams[2].dropped


@pytest.mark.parametrize("when", ["before-start", "inside"])
async def test_a_sink_sees_every_event_whatever_a_stream_drops(when: str) -> None:
    sink, n = MemorySink(), 1000
    bus = EventBus(capacity=4, sinks=[sink])
    stream = bus.subscribe() if when == "before-start" else None
    async with bus:
        stream = stream or bus.subscribe()
        await produce(bus, n, yield_every=0)
    assert [int(e.message) for e in sink.events] == list(range(n))
    assert stream.dropped == n - 4
    assert len([e async for e in stream]) == 4


# --------------------------------------------------------------------- memory


@functools.cache
def event_size() -> int:
    """Bytes one emitted event takes, as tracemalloc sees it."""
    tracemalloc.start()
    try:
        held = [NodeEvent(scope="s", message="m") for _ in range(1000)]
        size = tracemalloc.get_traced_memory()[0] // len(held)
    finally:
        tracemalloc.stop()
    return size


async def traced_peak(run: Callable[[], Awaitable[None]]) -> int:
    """Peak bytes allocated while ``run`` ran (allocations before it not counted)."""
    tracemalloc.start()
    try:
        await run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def fresh_event(i: int) -> NodeEvent:
    return NodeEvent(scope="s", message="m")


@pytest.fixture(autouse=True)
def quiet_lag_warnings(caplog: pytest.LogCaptureFixture) -> None:
    # pytest keeps every log record it captures; one "lagged" warning per burst
    # would then be memory that grows with the events (and noise).
    caplog.set_level(logging.ERROR, logger="weavegraph.event_bus")


SLACK = 64 * 1024  # the bus, its tasks, deque blocks, trio's bookkeeping


def bound(capacities: list[int], bus_capacity: int) -> int:
    """What a bus may hold: each buffer full plus one pending batch, every slot
    its own event (the worst case), and a pointer per slot."""
    slots = sum(capacities) + bus_capacity
    return slots * (event_size() + 16) + SLACK


@pytest.mark.parametrize("path", LOSSY_PATHS)
@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest"])
@pytest.mark.parametrize("yield_every", [0, 50])
async def test_lossy_memory_is_bounded_by_capacity_not_by_events(
    path: str, policy: str, yield_every: int
) -> None:
    capacity, n, subscribers = 8, 4000, 4
    limit = bound([capacity] * subscribers, capacity)
    assert n * event_size() > 6 * limit  # holding the events would show

    async def run() -> None:
        async with started_bus(path, [policy] * subscribers, capacity=capacity) as (
            bus,
            streams,
        ):
            counts = await run_readers_counting(
                streams,
                lambda: produce(bus, n, yield_every=yield_every, make=fresh_event),
                bus,
            )
        for count, stream in zip(counts, streams, strict=True):
            assert count + stream.dropped == n

    peak = await traced_peak(run)
    assert peak <= limit, f"peak {peak:,} B > {limit:,} B"


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest"])
@pytest.mark.parametrize("subscribers", [0, 2])
async def test_events_emitted_before_the_bus_starts_are_bounded_too(
    policy: str, subscribers: int
) -> None:
    # The broadcaster path before its task runs: emit never refuses an event on
    # a bus that has not started yet, and lossy subscribers (or none) must not
    # make it hold every one of them meanwhile.
    capacity, n = 8, 4000
    limit = bound([capacity] * subscribers, capacity)

    async def run() -> None:
        bus = EventBus(capacity=capacity, overflow=policy)  # type: ignore[arg-type]
        streams = [bus.subscribe() for _ in range(subscribers)]
        await produce(bus, n, yield_every=0, make=fresh_event)  # not started yet
        async with bus:
            counts = await run_readers_counting(
                streams, lambda: produce(bus, n, yield_every=0, make=fresh_event), bus
            )
        for count, stream in zip(counts, streams, strict=True):
            assert count + stream.dropped == 2 * n
        assert bus.metrics().published == 2 * n

    peak = await traced_peak(run)
    assert peak <= limit, f"peak {peak:,} B > {limit:,} B"


@pytest.mark.parametrize("path", LOSSY_PATHS)
async def test_a_larger_subscriber_buffer_is_bounded_by_its_own_capacity(
    path: str,
) -> None:
    n = 6000

    async def run() -> None:
        bus = EventBus(capacity=32)
        big = bus.subscribe(capacity=256) if path == "before-start" else None
        async with bus:
            big = big or bus.subscribe(capacity=256)
            small = bus.subscribe()
            await produce(bus, n, yield_every=0, make=fresh_event)
        assert (big.dropped, small.dropped) == (n - 256, n - 32)

    assert await traced_peak(run) <= bound([256, 32], 32)


@pytest.mark.parametrize("path", PATHS)
async def test_emit_async_keeps_lossless_memory_bounded(path: str) -> None:
    capacity, n = 8, 2000
    limit = bound([capacity, capacity], capacity)
    assert n * event_size() > 3 * limit  # holding the events would show
    highest = 0

    async def run() -> None:
        nonlocal highest
        async with started_bus(
            path, ["block", "block"], capacity=capacity, sink=DiscardSink()
        ) as (
            bus,
            streams,
        ):

            async def producer() -> None:
                nonlocal highest
                for i in range(n):
                    await bus.emit_async(fresh_event(i))
                    highest = max(highest, *(s.buffered for s in streams))

            counts = await run_readers_counting(streams, producer, bus, slow=True)
        assert counts == [n, n]

    peak = await traced_peak(run)
    assert highest <= capacity  # no reader is ever more than a buffer behind
    assert peak <= limit, f"peak {peak:,} B > {limit:,} B"


async def run_readers_counting(
    streams: list[EventStream],
    producer: Callable[[], Awaitable[None]],
    bus: EventBus,
    *,
    slow: bool = False,
) -> list[int]:
    """`run_readers` that only counts (a list of every event would be memory);
    ``slow``: reader i yields i times per event."""
    counts = [0] * len(streams)

    async def count(i: int) -> None:
        async for _ in streams[i]:
            counts[i] += 1
            for _ in range(i if slow else 0):
                await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        for i in range(len(streams)):
            nursery.start_soon(count, i)
        await producer()
        bus.close()
    return counts


@pytest.mark.parametrize("path", PATHS)
async def test_the_memory_check_sees_events_that_wait(path: str) -> None:
    # Control: lossless, and a producer that never yields, so every event waits
    # in the backlog (as documented); the peak must show it.
    n = 4000

    async def run() -> None:
        async with started_bus(path, ["block"], capacity=64, sink=DiscardSink()) as (
            bus,
            streams,
        ):
            counts = await run_readers_counting(
                streams, lambda: produce(bus, n, yield_every=0, make=fresh_event), bus
            )
        assert counts == [n]

    assert await traced_peak(run) >= n * event_size() // 2
