"""`RunLog`: one run's events, numbered, shared by every client that watches it."""

from __future__ import annotations

from collections import deque

import trio

from ..events.types import Event


class RunLog:
    """A bounded, numbered log of a run's events with one cursor per reader.

    Every event gets the next sequence number (from 1): the SSE ``id``. Readers
    keep their own position, so a slow client never slows another; when a reader
    falls more than ``capacity`` events behind, the events it missed are counted
    as its drops. A reconnecting client resumes after its ``Last-Event-ID``
    without losing or repeating events, as long as they are still in the log.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: deque[tuple[int, Event]] = deque()
        self._next = 1
        self._closed = False
        self._changed = trio.lowlevel.ParkingLot()

    @property
    def first(self) -> int:
        """The oldest sequence number still held."""
        return self._items[0][0] if self._items else self._next

    @property
    def next(self) -> int:
        """The sequence number the next event will get."""
        return self._next

    @property
    def closed(self) -> bool:
        """Whether the run ended: no event will be added."""
        return self._closed

    def append(self, event: Event) -> int:
        """Add ``event``; return its sequence number."""
        seq = self._next
        self._next += 1
        self._items.append((seq, event))
        if len(self._items) > self.capacity:
            self._items.popleft()
        if self._changed:
            self._changed.unpark_all()
        return seq

    def close(self) -> None:
        """No more events; wake every reader."""
        self._closed = True
        self._changed.unpark_all()

    async def read(self, cursor: int) -> tuple[list[tuple[int, Event]], int]:
        """Events from sequence ``cursor`` on, waiting for at least one.

        Returns the events and how many before them were dropped (already gone
        from the log). An empty list means the log is closed and fully read. A
        checkpoint.
        """
        while cursor >= self._next and not self._closed:
            await self._changed.park()
        await trio.lowlevel.checkpoint_if_cancelled()
        first = self.first
        dropped = max(0, first - cursor)
        start = max(cursor, first)
        offset = start - first
        return [self._items[i] for i in range(offset, len(self._items))], dropped
