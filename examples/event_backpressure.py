"""Slow consumers: bounded buffers, counted drops, and the lossless policy.

A node emits 5,000 events as fast as it can; a consumer reads one per
millisecond. Three ways to live with that:

* ``drop_oldest`` (default): memory stays bounded, the consumer skips the oldest
  events, ``events.dropped`` counts them and a warning is logged once per burst;
  the stream-end event always arrives (it is the newest).
* ``drop_newest``: the consumer keeps the first events and misses later ones.
* ``block`` with ``ctx.emit_async``: lossless; the producer waits whenever the
  consumer's buffer is full (end-to-end backpressure, bounded memory).
"""

from __future__ import annotations

import logging

import trio
import trio.lowlevel

from weavegraph import (
    END,
    START,
    EventBusConfig,
    GraphBuilder,
    NodeContext,
    RuntimeConfig,
    StateSnapshot,
    VersionedState,
)

COUNT = 5000


async def firehose(snapshot: StateSnapshot, ctx: NodeContext) -> None:
    """Emit COUNT events, never waiting for room (it yields now and then)."""
    for i in range(COUNT):
        ctx.emit("tick", str(i))
        if i % 500 == 0:
            await trio.lowlevel.checkpoint()  # let the slow consumer run now and then


async def polite(snapshot: StateSnapshot, ctx: NodeContext) -> None:
    """Emit COUNT events, waiting for room in lossless buffers."""
    for i in range(COUNT):
        await ctx.emit_async("tick", str(i))


def app_for(node, overflow: str):
    config = RuntimeConfig(event_bus=EventBusConfig(capacity=64, overflow=overflow))
    return (
        GraphBuilder()
        .add_node("producer", node)
        .add_edge(START, "producer")
        .add_edge("producer", END)
        .compile(config)
    )


async def consume(node, overflow: str) -> None:
    app = app_for(node, overflow)
    received = 0
    first = last = None
    async with app.invoke_streaming(VersionedState()) as (run, events):
        async for event in events:
            if event.is_stream_end:
                break
            if event.scope_label != "tick":
                continue  # the runtime's node.start, node.end and step.end
            received += 1
            first = first or event.message
            last = event.message
            await trio.sleep(0.0001)
        await run.join()
    print(
        f"{overflow:>12}: received {received:>5}, dropped {events.dropped:>5},"
        f" first {first}, last {last}"
    )


async def main() -> None:
    """The three policies, one after the other."""
    logging.basicConfig(level=logging.WARNING, format="  log: %(message)s")
    await consume(firehose, "drop_oldest")
    await consume(firehose, "drop_newest")
    await consume(polite, "block")


if __name__ == "__main__":
    trio.run(main)
