"""The event bus: producers, a broadcaster task, and one bounded buffer per subscriber.

Producers call `EventBus.emit`, which appends to the pending batch and, for the first
event of a batch, wakes the broadcaster through a trio memory channel. The
broadcaster takes the whole batch and fans it out to every subscriber's buffer in
one pass, so the per-event cost on both sides is a list append and a deque
operation. A producer that emits a lot without ever yielding makes `emit` fan out
in place once the batch reaches the bus capacity, so memory stays bounded by
``capacity * subscribers`` for lossy subscribers whatever the producer does.

Overflow policies, per subscriber:

* ``"drop_oldest"`` (default): a full buffer forgets its oldest events.
* ``"drop_newest"``: a full buffer refuses new events.
* ``"block"``: lossless. Events that do not fit wait in the subscriber's backlog;
  `EventBus.emit_async` waits until every blocking subscriber caught up, which
  gives end-to-end backpressure with bounded memory.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Literal, Self, get_args

import attrs
import trio

from .._core.errors import EventBusClosed, EventBusConfigError
from .._trio import single_exception
from .types import DiagnosticEvent, Event

if TYPE_CHECKING:
    from .sinks import EventSink
    from .stream import EventStream

logger = logging.getLogger("weavegraph.event_bus")

Overflow = Literal["drop_oldest", "drop_newest", "block"]
OVERFLOW_POLICIES: tuple[str, ...] = get_args(Overflow)
DEFAULT_CAPACITY = 1024
SINK_ERROR_SCOPE = "event_bus.sink_error"
_EMIT_ASYNC_YIELD_EVERY = 256
CANCEL_DRAIN_TIMEOUT = 5.0
"""Seconds a cancelled ``async with bus:`` block waits for its sinks to drain."""


def _is_cancellation(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return any(_is_cancellation(e) for e in exc.exceptions)
    return isinstance(exc, trio.Cancelled | KeyboardInterrupt)


def check_capacity(capacity: object) -> int:
    """Validate a buffer capacity (a positive int)."""
    if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
        raise EventBusConfigError(
            f"event buffer capacity must be a positive integer, got {capacity!r}"
        )
    return capacity


def check_overflow(overflow: object) -> Overflow:
    """Validate an overflow policy name."""
    if overflow not in OVERFLOW_POLICIES:
        raise EventBusConfigError(
            f"unknown overflow policy {overflow!r}; use one of"
            f" {', '.join(OVERFLOW_POLICIES)}"
        )
    return overflow  # type: ignore[return-value]


def _to_sinks(value: Iterable[EventSink]) -> tuple[EventSink, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class EventBusConfig:
    """How a run's default event bus is built (``RuntimeConfig.event_bus``).

    Attributes:
        capacity: Buffer size per subscriber, in events.
        sinks: Sinks attached to every run's bus.
        overflow: Default overflow policy of subscribers.
    """

    capacity: int = attrs.field(default=DEFAULT_CAPACITY, converter=check_capacity)
    sinks: tuple[EventSink, ...] = attrs.field(default=(), converter=_to_sinks)
    overflow: Overflow = attrs.field(default="drop_oldest", converter=check_overflow)

    def build(self, extra_sinks: Iterable[EventSink] = ()) -> EventBus:
        """A new, not yet started `EventBus` with these settings."""
        return EventBus(
            sinks=(*self.sinks, *extra_sinks),
            capacity=self.capacity,
            overflow=self.overflow,
        )

    def signature(self) -> list[str]:
        """Stable strings describing this configuration (for ``config_hash``)."""
        return [
            f"event_buffer:{self.capacity}",
            f"event_overflow:{self.overflow}",
            *(
                f"event_sink:{i}:{type(s).__qualname__}"
                for i, s in enumerate(self.sinks)
            ),
        ]


@attrs.frozen(kw_only=True)
class BusMetrics:
    """A snapshot of `EventBus.metrics`.

    Attributes:
        capacity: Default buffer size per subscriber.
        published: Events accepted by `EventBus.emit` so far.
        dropped: Events dropped, summed over every subscriber.
        subscribers: Subscribers currently attached (sinks included).
        pending: Events accepted but not yet handed to subscribers.
    """

    capacity: int
    published: int
    dropped: int
    subscribers: int
    pending: int


class Subscriber:
    """The bus side of one subscription: a bounded buffer and its counters."""

    __slots__ = (
        "backlog",
        "buffer",
        "capacity",
        "closed",
        "dropped",
        "ended",
        "lagging",
        "overflow",
        "ready",
        "room",
    )

    def __init__(self, capacity: int, overflow: Overflow) -> None:
        self.capacity = capacity
        self.overflow = overflow
        self.buffer: deque[Event] = deque()
        self.backlog: deque[Event] = deque()
        self.dropped = 0
        self.lagging = False
        self.ended = False  # the bus will deliver nothing more
        self.closed = False  # the consumer went away
        self.ready = trio.lowlevel.ParkingLot()  # consumer waits for events
        self.room = trio.lowlevel.ParkingLot()  # producers wait for backlog room

    def offer(self, batch: Sequence[Event]) -> int:
        """Take ``batch`` according to the overflow policy; return how many dropped."""
        buffer = self.buffer
        free = self.capacity - len(buffer)
        count = len(batch)
        dropped = 0
        if self.overflow == "block":
            if self.backlog or count > free:
                if free > 0 and not self.backlog:
                    buffer.extend(batch[:free])
                    self.backlog.extend(batch[free:])
                else:
                    self.backlog.extend(batch)
            else:
                buffer.extend(batch)
        elif count <= free:
            buffer.extend(batch)
        elif self.overflow == "drop_oldest":
            dropped = count - free
            if count >= self.capacity:
                buffer.clear()
                buffer.extend(batch[count - self.capacity :])
            else:
                for _ in range(count - free):
                    buffer.popleft()
                buffer.extend(batch)
        else:  # drop_newest
            dropped = count - free
            if free > 0:
                buffer.extend(batch[:free])
        if dropped:
            self.dropped += dropped
            if not self.lagging:
                self.lagging = True
                logger.warning(
                    "event stream lagged; dropped events (dropped=%d, total=%d,"
                    " capacity=%d, policy=%s)",
                    dropped,
                    self.dropped,
                    self.capacity,
                    self.overflow,
                )
        if buffer and self.ready:
            self.ready.unpark_all()
        return dropped

    def offer_one(self, event: Event) -> int:
        """`offer` for a single event (the inline path); return 1 if one dropped."""
        buffer = self.buffer
        if len(buffer) < self.capacity and not self.backlog:
            buffer.append(event)
            if self.ready:  # someone is parked: wake them
                self.ready.unpark_all()
            return 0
        return self.offer((event,))

    def take(self) -> Event:
        """Pop the oldest buffered event (the caller checked there is one)."""
        event = self.buffer.popleft()
        if self.backlog:
            self.buffer.append(self.backlog.popleft())
            if not self.backlog and self.room:
                self.room.unpark_all()
        elif not self.buffer:
            self.lagging = False
        return event


class EventBus:
    """Fans events out to every subscriber and sink, with bounded buffers.

    A bus is started by the runner that uses it, or by hand with ``async with
    bus:``; its broadcaster and sink tasks live in that block. Leaving the block
    closes the bus: everything already emitted is delivered, every stream ends, and
    every sink is drained and closed.

    Args:
        sinks: Sinks to attach; each runs as its own task with a lossless
            (``"block"``) subscription.
        capacity: Buffer size per subscriber, in events.
        overflow: Default overflow policy for `subscribe`.

    Raises:
        EventBusConfigError: invalid capacity or overflow policy.
    """

    def __init__(
        self,
        sinks: Iterable[EventSink] = (),
        capacity: int = DEFAULT_CAPACITY,
        overflow: Overflow = "drop_oldest",
    ) -> None:
        self._capacity = check_capacity(capacity)
        self._overflow = check_overflow(overflow)
        self._sinks: list[EventSink] = list(sinks)
        self._subscribers: list[Subscriber] = []
        self._batch: list[Event] = []
        self._notified = False
        self._published = 0
        self._dropped_total = 0
        self._closed = False
        self._started = False
        self._inline = False
        self._async_calls = 0
        self._finished = trio.Event()
        send, recv = trio.open_memory_channel[None](1)
        self._inbox_send: trio.MemorySendChannel[None] = send
        self._inbox_recv: trio.MemoryReceiveChannel[None] = recv
        self._manager: AbstractAsyncContextManager[trio.Nursery] | None = None
        self._service_scope: trio.CancelScope | None = None
        self._sink_streams: list[tuple[EventSink, EventStream]] = [
            (sink, self.subscribe(overflow="block")) for sink in self._sinks
        ]

    # ------------------------------------------------------------------ properties

    @property
    def capacity(self) -> int:
        """Default buffer size per subscriber."""
        return self._capacity

    @property
    def overflow(self) -> Overflow:
        """Default overflow policy of `subscribe`."""
        return self._overflow

    @property
    def closed(self) -> bool:
        """Whether `close` was called; emitting then raises `EventBusClosed`."""
        return self._closed

    @property
    def sinks(self) -> tuple[EventSink, ...]:
        """The attached sinks."""
        return tuple(self._sinks)

    def metrics(self) -> BusMetrics:
        """Counters: capacity, published, dropped, subscribers, pending."""
        self._prune()
        return BusMetrics(
            capacity=self._capacity,
            published=self._published,
            dropped=self._dropped_total,
            subscribers=len(self._subscribers),
            pending=len(self._batch),
        )

    # ----------------------------------------------------------------- subscribing

    def subscribe(
        self,
        capacity: int | None = None,
        overflow: Overflow | None = None,
        *,
        stop_at_stream_end: bool = False,
    ) -> EventStream:
        """A new `EventStream` that sees every event emitted from now on.

        Args:
            capacity: Its buffer size (default: the bus capacity).
            overflow: Its overflow policy (default: the bus policy).
            stop_at_stream_end: End the stream right after the first stream-end
                sentinel instead of when the bus closes.

        A subscription made on a closed bus is already at its end.
        """
        from .stream import EventStream

        sub = Subscriber(
            check_capacity(capacity if capacity is not None else self._capacity),
            check_overflow(overflow if overflow is not None else self._overflow),
        )
        if self._closed and not self._batch:
            sub.ended = True
        else:
            self._subscribers.append(sub)
        return EventStream._create(sub, stop_at_stream_end=stop_at_stream_end)

    def add_sink(self, sink: EventSink) -> None:
        """Attach ``sink`` before the bus starts.

        Raises:
            EventBusClosed: the bus is closed.
            RuntimeError: the bus already started (sink tasks need the nursery).
        """
        if self._closed:
            raise EventBusClosed("cannot add a sink to a closed event bus")
        if self._started:
            raise RuntimeError(
                "add sinks before the bus starts, or pass them to EventBus(sinks=...)"
            )
        self._sinks.append(sink)
        self._sink_streams.append((sink, self.subscribe(overflow="block")))

    def _prune(self) -> None:
        if any(s.closed for s in self._subscribers):
            self._subscribers = [s for s in self._subscribers if not s.closed]

    # ------------------------------------------------------------------ publishing

    def emit(self, event: Event) -> None:
        """Publish ``event``; never waits, never fails for lack of subscribers.

        Not a checkpoint. Events go to subscribers in the order they were emitted.

        Raises:
            EventBusClosed: the bus was closed.
        """
        if self._closed:
            raise EventBusClosed(
                "the event bus is closed; events can only be emitted while its run"
                " (or its 'async with bus:' block) is active"
            )
        self._published += 1
        if self._inline:
            if self._subscribers:
                self._deliver_one(event)
            return
        batch = self._batch
        batch.append(event)
        if not self._notified:
            self._notified = True
            self._inbox_send.send_nowait(None)
        elif len(batch) >= self._capacity and self._started:
            self._flush()

    def _deliver_one(self, event: Event) -> None:
        pruned = False
        for sub in self._subscribers:
            if sub.closed:
                pruned = True
            elif sub.offer_one(event):
                self._dropped_total += 1
        if pruned:
            self._prune()

    async def emit_async(self, event: Event) -> None:
        """Publish ``event``; wait while a ``"block"`` subscriber has no room for it.

        This is end-to-end backpressure with bounded memory: a producer using it
        is never more than one buffer ahead of its slowest lossless consumer.
        A checkpoint: always a cancellation point; it yields to the scheduler
        whenever it waits for room, and at least every 256 calls otherwise.

        Raises:
            EventBusClosed: the bus was closed.
        """
        self.emit(event)
        await trio.lowlevel.checkpoint_if_cancelled()
        pending = len(self._batch)
        for sub in self._subscribers:
            if (
                sub.overflow == "block"
                and not sub.closed
                and len(sub.buffer) + len(sub.backlog) + pending > sub.capacity
            ):
                self._flush()  # hand the batch over so that the backlog is exact
                pending = 0
                while sub.backlog and not sub.closed and not sub.ended:
                    await sub.room.park()
                self._async_calls = 0
        self._async_calls += 1
        if self._async_calls >= _EMIT_ASYNC_YIELD_EVERY:
            self._async_calls = 0
            await trio.lowlevel.cancel_shielded_checkpoint()

    def _flush(self) -> None:
        batch = self._batch
        if not batch:
            return
        self._batch = []
        self._fan_out(batch)

    def _fan_out(self, batch: list[Event]) -> None:
        pruned = False
        for sub in self._subscribers:
            if sub.closed:
                pruned = True
                continue
            dropped = sub.offer(batch)
            if dropped:
                self._dropped_total += dropped
        if pruned:
            self._prune()

    # ------------------------------------------------------------------- lifecycle

    async def _broadcast(self) -> None:
        with self._inbox_recv:
            async for _ in self._inbox_recv:
                self._notified = False
                self._flush()
        self._flush()
        for sub in self._subscribers:
            sub.ended = True
            sub.ready.unpark_all()

    async def _run_sink(self, sink: EventSink, stream: EventStream) -> None:
        with stream:
            async for event in stream:
                try:
                    await sink.handle(event)
                except Exception as exc:  # a failing sink never stops the run
                    self._report_sink_error(sink, exc)
            try:
                close = getattr(sink, "aclose", None)
                if close is not None:
                    await close()
            except Exception as exc:
                self._report_sink_error(sink, exc)

    def _report_sink_error(self, sink: EventSink, exc: Exception) -> None:
        name = getattr(sink, "name", None) or type(sink).__name__
        logger.error("event sink %s failed: %r", name, exc)
        if self._closed:
            return
        self.emit(
            DiagnosticEvent(
                scope=SINK_ERROR_SCOPE, message=f"{name}: {type(exc).__name__}: {exc}"
            )
        )

    async def serve(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the broadcaster and the sink tasks until the bus is closed and drained.

        For ``nursery.start(bus.serve)``; ``async with bus:`` does this for you.
        Cancelling it stops the tasks at once (sinks may then miss the last events).
        """
        await self._serve(shielded=False, task_status=task_status)

    async def _serve(
        self,
        *,
        shielded: bool,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        if self._started:
            raise RuntimeError("this EventBus was already started; a bus runs once")
        self._started = True
        try:
            # Shielded when owned by ``async with bus:``: its __aexit__ decides
            # how long the sinks may drain, even when the block was cancelled.
            with trio.CancelScope(shield=shielded) as scope:
                self._service_scope = scope
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._broadcast)
                    for sink, stream in self._sink_streams:
                        nursery.start_soon(self._run_sink, sink, stream)
                    task_status.started()
        finally:
            self.close()
            self._finished.set()

    def close(self) -> None:
        """Stop accepting events; what was emitted is still delivered, then streams end.

        Idempotent, not a checkpoint.
        """
        if self._closed:
            return
        self._closed = True
        self._inbox_send.close()
        if not self._started:
            # Nobody will broadcast: deliver what is pending and end the streams.
            self._flush()
            for sub in self._subscribers:
                sub.ended = True
                sub.ready.unpark_all()

    async def aclose(self) -> None:
        """`close`, then wait until every sink was drained and closed (if started)."""
        self.close()
        if self._started:
            await self._finished.wait()
        else:
            await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> Self:
        if not self._sink_streams and not self._subscribers and not self._batch:
            # Nothing to fan out to: no task is needed. Events are delivered
            # inline to any stream subscribed later, and counted otherwise.
            self._inline = True
            return self
        manager = trio.open_nursery()
        nursery = await manager.__aenter__()
        try:
            # Shielded: starting is quick, and a started bus can always deliver
            # the sentinel of a run cancelled right at its start.
            with trio.CancelScope(shield=True):
                await nursery.start(partial(self._serve, shielded=True))
        except BaseException as exc:
            self.close()
            await _exit_nursery(manager, exc)
            raise
        self._manager = manager
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        if self._inline:
            await trio.lowlevel.checkpoint()
            return
        manager, self._manager = self._manager, None
        assert manager is not None, "EventBus.__aexit__ without __aenter__"
        # Let the sinks drain before leaving: they must see the last events (the
        # stream-end sentinel among them) even when the block failed. A cancelled
        # block drains shielded, for at most CANCEL_DRAIN_TIMEOUT seconds.
        try:
            if exc is None or not _is_cancellation(exc):
                await self._finished.wait()
            else:
                with trio.CancelScope(shield=True):
                    with trio.move_on_after(CANCEL_DRAIN_TIMEOUT):
                        await self._finished.wait()
        except BaseException as wait_error:
            self._stop_service()
            await _exit_nursery(manager, wait_error)
            raise
        self._stop_service()
        await _exit_nursery(manager, exc)

    def _stop_service(self) -> None:
        if self._service_scope is not None:
            self._service_scope.cancel("event bus closed")


async def _exit_nursery(
    manager: AbstractAsyncContextManager[trio.Nursery], exc: BaseException | None
) -> None:
    """Leave ``manager``'s nursery; a lone failure comes out unwrapped."""
    try:
        await manager.__aexit__(
            type(exc) if exc is not None else None,
            exc,
            exc.__traceback__ if exc is not None else None,
        )
    except BaseExceptionGroup as group:
        only = single_exception(group)
        if only is None:
            raise
        raise only from only.__cause__
