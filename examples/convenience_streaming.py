"""The simple patterns: every event in a channel, or fanned out to sinks.

* `App.invoke_with_channel` returns the final state and a channel holding every
  event of the run, ending with the stream-end event: the simplest way to show
  progress after (or while wiring) a script.
* `App.invoke_with_sinks` sends every event to each sink — the terminal, a JSON
  Lines file, a channel — and returns once they all saw everything.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import trio

from weavegraph import (
    END,
    START,
    ChannelSink,
    Event,
    GraphBuilder,
    JsonLinesSink,
    MemorySink,
    NodeContext,
    NodePartial,
    StateSnapshot,
    StdOutSink,
    VersionedState,
)


async def step(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    """Do three units of work, reporting each."""
    for i in range(1, 4):
        ctx.emit("work", f"unit {i} of 3", unit=i)
    return NodePartial(extra={"units": 3})


app = (
    GraphBuilder()
    .add_node("step", step)
    .add_edge(START, "step")
    .add_edge("step", END)
    .compile()
)


async def main() -> None:
    """Both patterns, one after the other."""
    print("pattern 1: a channel of every event")
    final, events = await app.invoke_with_channel(VersionedState())
    async for event in events:
        print(f"  {event.scope_label:>28}  {event.message}")
    print(f"  final extra: {dict(final.extra)}")

    print("pattern 2: several sinks")
    path = Path(tempfile.mkdtemp()) / "events.jsonl"
    memory = MemorySink()
    send, receive = trio.open_memory_channel[Event](100)
    await app.invoke_with_sinks(
        VersionedState(), [StdOutSink(), JsonLinesSink(path), memory, ChannelSink(send)]
    )
    forwarded = [event async for event in receive]
    lines = path.read_text().splitlines()
    print(f"  memory sink: {len(memory.events)} events; channel: {len(forwarded)};")
    print(f"  {path.name}: {len(lines)} lines, first: {lines[0][:60]}...")


if __name__ == "__main__":
    trio.run(main)
