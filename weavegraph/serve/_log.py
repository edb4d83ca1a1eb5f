"""`RunLog`: one run's events, numbered, shared by every client that watches it."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable

import trio

from ..events.types import Event

LogItem = tuple[int, Event, bytes]
"""``(sequence number, event, its encoded frame)``."""


class RunLog:
    """A bounded, numbered log of a run's events with one cursor per reader.

    Every event gets the next sequence number (from 1): the SSE ``id``. Readers
    keep their own position, so a slow client never slows another; when a reader
    falls more than ``capacity`` events behind, the events it missed are counted
    as its drops. A reconnecting client resumes after its ``Last-Event-ID``
    without losing or repeating events, as long as they are still in the log.
    """

    def __init__(
        self, capacity: int, encode: Callable[[Event, int], bytes] | None = None
    ) -> None:
        self.capacity = capacity
        self._encode = encode
        self._items: deque[LogItem] = deque()
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
        """Add ``event``; return its sequence number.

        With an ``encode`` function, the event's wire form is made here, once,
        whatever the number of readers.
        """
        seq = self._next
        self._next += 1
        frame = self._encode(event, seq) if self._encode is not None else b""
        self._items.append((seq, event, frame))
        if len(self._items) > self.capacity:
            self._items.popleft()
        if self._changed:
            self._changed.unpark_all()
        return seq

    def close(self) -> None:
        """No more events; wake every reader."""
        self._closed = True
        self._changed.unpark_all()

    async def read(self, cursor: int) -> tuple[list[LogItem], int]:
        """Events from sequence ``cursor`` on, waiting for at least one.

        Returns ``(seq, event, frame)`` items and how many before them were
        dropped (already gone from the log). An empty list means the log is
        closed and fully read. A checkpoint.
        """
        while cursor >= self._next and not self._closed:
            await self._changed.park()
        await trio.lowlevel.checkpoint_if_cancelled()
        first = self.first
        dropped = max(0, first - cursor)
        start = max(cursor, first)
        offset = start - first
        return list(itertools.islice(self._items, offset, None)), dropped
