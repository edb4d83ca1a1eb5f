"""The three ways a bus delivers, for tests that must hold on each of them.

* ``"before-start"``: streams subscribed before the bus starts; its broadcaster
  task fans out whole batches.
* ``"inline"``: streams subscribed inside ``async with EventBus()`` of a bus that
  had no subscriber and no sink; ``emit`` delivers in place, no task.
* ``"beside-a-sink"``: streams subscribed inside the block of a bus whose
  broadcaster runs for a sink.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from weavegraph import EventBus, EventSink, EventStream, MemorySink

PATHS = ("before-start", "inline", "beside-a-sink")
BROADCASTER_PATHS = ("before-start", "beside-a-sink")
"""The paths with a broadcaster task (a bus with sinks always has one)."""
POLICIES = ("drop_oldest", "drop_newest", "block")


@asynccontextmanager
async def open_bus(
    path: str,
    subscriptions: Sequence[dict[str, Any]],
    *,
    capacity: int = 1024,
    sinks: Sequence[EventSink] = (),
) -> AsyncIterator[tuple[EventBus, list[EventStream]]]:
    """A running bus and one stream per ``subscribe`` keyword set, subscribed
    the way ``path`` says (``sinks`` are attached on every path but
    ``"inline"``; ``"beside-a-sink"`` adds a `MemorySink` when there is none)."""
    if path == "inline":
        assert not sinks, "an inline bus has no sink"
    elif path == "beside-a-sink" and not sinks:
        sinks = [MemorySink()]
    bus = EventBus(capacity=capacity, sinks=sinks)

    def subscribe() -> list[EventStream]:
        return [bus.subscribe(**kwargs) for kwargs in subscriptions]

    streams = subscribe() if path == "before-start" else []
    async with bus:
        if path != "before-start":
            streams = subscribe()
        assert bus._inline == (path == "inline")  # the path under test is real
        yield bus, streams
