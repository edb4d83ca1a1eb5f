"""`EventStream`: one subscriber's view of an event bus, as a trio receive channel."""

from __future__ import annotations

import math
from types import TracebackType
from typing import TYPE_CHECKING, Self, final

import trio

from .._core.errors import ConfigError, StateError
from .types import STREAM_END_SCOPE, DiagnosticEvent, Event

_checkpoint_if_cancelled = trio.lowlevel.checkpoint_if_cancelled

if TYPE_CHECKING:
    from .bus import Subscriber

# receive() yields to the scheduler at least this often while events are buffered,
# so a busy consumer cannot starve other tasks; in between it only checks for
# cancellation, which keeps the per-event cost low. About one default buffer: a
# consumer empties its buffer in one turn and so keeps up with a producer that
# fills it in one.
_YIELD_EVERY = 1024
# While events are buffered, ``async for`` checks for cancellation every 8
# events rather than every one: the check costs more than taking an event.
_CANCEL_CHECK_MASK = 7


@final
class EventStream(trio.abc.ReceiveChannel[Event]):
    """Events from one subscription, in emission order.

    ``async for event in stream`` ends when the stream ends; `receive` raises
    ``trio.EndOfChannel`` there. A stream ends once its bus closed and its buffer is
    drained, or — for streams that follow one run — right after that run's
    stream-end sentinel. Get one from ``bus.subscribe()`` or the ``App`` helpers;
    it is not constructed directly.
    """

    __slots__ = ("_sentinel_seen", "_since_yield", "_stop_at_end", "_sub")

    _sub: Subscriber
    _stop_at_end: bool
    _sentinel_seen: bool
    _since_yield: int

    def __init__(self) -> None:
        raise StateError("EventStream objects come from EventBus.subscribe()")

    @classmethod
    def _create(cls, sub: Subscriber, *, stop_at_stream_end: bool) -> EventStream:
        self = object.__new__(cls)
        self._sub = sub
        self._stop_at_end = stop_at_stream_end
        self._sentinel_seen = False
        self._since_yield = 0
        return self

    @property
    def dropped(self) -> int:
        """Events this subscriber lost to its overflow policy."""
        return self._sub.dropped

    @property
    def buffered(self) -> int:
        """Events waiting in this stream's buffer (and backlog)."""
        return len(self._sub.buffer) + len(self._sub.backlog)

    @property
    def capacity(self) -> int:
        """This stream's buffer size."""
        return self._sub.capacity

    def receive_nowait(self) -> Event:
        """The next buffered event without waiting.

        Raises:
            trio.WouldBlock: nothing is buffered yet.
            trio.EndOfChannel: the stream ended.
            trio.ClosedResourceError: this stream was closed.
        """
        sub = self._sub
        if sub.closed:
            raise trio.ClosedResourceError("this EventStream was closed")
        if self._sentinel_seen:  # set only for streams that stop there
            raise trio.EndOfChannel
        if sub.buffer:
            event = sub.take()
            if self._stop_at_end and event.is_stream_end:
                self._saw_sentinel()
            return event
        if sub.ended:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def receive(self) -> Event:
        """The next event, waiting for one if needed.

        A checkpoint: always a cancellation point, and it yields to the scheduler
        when it waits or at least every 1024 events. Cancellation loses no event.
        (``async for`` over the stream, the fast path, checks for cancellation
        every 8 buffered events and whenever it waits.)

        Raises:
            trio.EndOfChannel: the stream ended.
            trio.ClosedResourceError: this stream was closed.
        """
        sub = self._sub
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                event = self.receive_nowait()
            except trio.WouldBlock:
                self._since_yield = 0
                await sub.ready.park()
                continue
            if self._sentinel_seen:
                return event  # the sentinel: the stream ends after it
            self._since_yield += 1
            if self._since_yield >= _YIELD_EVERY:
                self._since_yield = 0
                await trio.lowlevel.cancel_shielded_checkpoint()
            return event

    async def __anext__(self) -> Event:
        # receive() inlined for the common case (an event is buffered, nothing
        # special pending); this is the hot path of ``async for event in stream``.
        # A closed stream's buffer is empty, and one that saw its sentinel has
        # its count at _YIELD_EVERY: both take receive(), which says why.
        sub = self._sub
        buffer = sub.buffer
        count = self._since_yield + 1
        if buffer and count < _YIELD_EVERY and not sub.backlog:
            self._since_yield = count
            if not count & _CANCEL_CHECK_MASK:
                # Raises if cancelled, never yields otherwise: the buffer is as
                # it was.
                await _checkpoint_if_cancelled()
            event = buffer.popleft()
            if sub.burst and not buffer:
                sub.end_burst()  # caught up: the lag burst is over
            if (
                self._stop_at_end
                and type(event) is DiagnosticEvent
                and event.scope == STREAM_END_SCOPE
            ):
                self._saw_sentinel()
            return event
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def _saw_sentinel(self) -> None:
        # The stream ends here; the count keeps __anext__ off its fast path.
        self._sentinel_seen = True
        self._since_yield = _YIELD_EVERY

    async def next_timeout(self, seconds: float) -> Event | None:
        """The next event, or ``None`` if none arrives within ``seconds``.

        Also ``None`` once the stream ended. A checkpoint.
        """
        if seconds < 0 or math.isnan(seconds):
            raise ConfigError(f"timeout must be >= 0 seconds, got {seconds!r}")
        with trio.move_on_after(seconds):
            try:
                return await self.receive()
            except trio.EndOfChannel:
                return None
        return None

    def close(self) -> None:
        """Detach from the bus; buffered events are discarded. Idempotent."""
        sub = self._sub
        if sub.closed:
            return
        sub.closed = True
        if sub.burst:
            sub.end_burst()
        sub.buffer.clear()
        sub.backlog.clear()
        sub.ready.unpark_all()
        sub.room.unpark_all()

    async def aclose(self) -> None:
        """`close`, then a checkpoint."""
        self.close()
        await trio.lowlevel.checkpoint()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._sub.closed else "ended" if self._sub.ended else "open"
        return (
            f"<EventStream {state} buffered={self.buffered} dropped={self.dropped}"
            f" capacity={self.capacity}>"
        )
