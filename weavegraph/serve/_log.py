"""`RunLog`: one run's events, numbered, shared by every client that watches it."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable

import trio

from .._core.errors import ConfigError
from ..events.types import Event

LogItem = tuple[int, bytes]
"""``(sequence number, the event's encoded frame)``."""

ITEM_OVERHEAD = 120
"""Bytes an item costs beyond its frame (the tuple, the int, the bytes header)."""


class RunLog:
    """A bounded, numbered log of a run's encoded events with one cursor per reader.

    Every event gets the next sequence number (from 1): the SSE ``id``. Readers
    keep their own position, so a slow client never slows another; when a reader
    falls behind the oldest event still held, the events it missed are counted
    as its drops. A reconnecting client resumes after its ``Last-Event-ID``
    without losing or repeating events, as long as they are still in the log.

    The log holds at most ``capacity`` events and, with ``max_bytes``, at most
    that many bytes of frames (the newest event is always kept, whatever its
    size). Only the frames are kept: the event is encoded once, on arrival.

    Attributes:
        capacity: The most events held.
        max_bytes: The most bytes held (``None``: no byte bound).
        trimmed_through: The newest sequence number removed to bound memory
            (by ``max_bytes`` or `trim`), 0 if none was.
    """

    def __init__(
        self,
        capacity: int,
        encode: Callable[[Event, int], bytes],
        max_bytes: int | None = None,
    ) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.trimmed_through = 0
        self._encode = encode
        self._items: deque[LogItem] = deque()
        self._size = 0
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
    def last(self) -> int:
        """The newest sequence number given out (0 before the first event)."""
        return self._next - 1

    @property
    def size(self) -> int:
        """Bytes held: the frames plus a fixed cost per event."""
        return self._size

    @property
    def closed(self) -> bool:
        """Whether the run ended: no event will be added."""
        return self._closed

    def append(self, event: Event) -> int:
        """Encode and add ``event``; return its sequence number.

        The wire form is made here, once, whatever the number of readers.
        """
        seq = self._next
        self._next += 1
        frame = self._encode(event, seq)
        self._items.append((seq, frame))
        self._size += len(frame) + ITEM_OVERHEAD
        while len(self._items) > self.capacity:
            self._pop()
        if self.max_bytes is not None and self._size > self.max_bytes:
            self.trim(self.max_bytes)
        if self._changed:
            self._changed.unpark_all()
        return seq

    def trim(self, max_bytes: int) -> int:
        """Drop the oldest events until at most ``max_bytes`` are held.

        The newest event stays. Returns the bytes freed; readers that had not
        read the dropped events see them as drops, flagged as memory losses.
        """
        freed = 0
        while self._size > max_bytes and len(self._items) > 1:
            seq, size = self._pop()
            self.trimmed_through = seq
            freed += size
        return freed

    def _pop(self) -> tuple[int, int]:
        seq, frame = self._items.popleft()
        size = len(frame) + ITEM_OVERHEAD
        self._size -= size
        return seq, size

    def close(self) -> None:
        """No more events; wake every reader."""
        self._closed = True
        self._changed.unpark_all()

    async def read(self, cursor: int) -> tuple[list[LogItem], int]:
        """Events from sequence ``cursor`` on, waiting for at least one.

        Returns ``(seq, frame)`` items and how many before them were dropped
        (already gone from the log). An empty list means the log is closed and
        fully read. ``cursor`` must be at most `next`. A checkpoint.
        """
        if cursor > self._next:
            raise ConfigError(f"cursor {cursor} is beyond the log's next event")
        while cursor >= self._next and not self._closed:
            await self._changed.park()
        await trio.lowlevel.checkpoint_if_cancelled()
        first = self.first
        dropped = max(0, first - cursor)
        start = max(cursor, first)
        offset = start - first
        return list(itertools.islice(self._items, offset, None)), dropped
