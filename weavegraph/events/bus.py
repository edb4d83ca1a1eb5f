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

On every policy the run sentinels (the stream-end and invocation-end diagnostics)
are never dropped: a full buffer takes them beyond its capacity, and the oldest
ordinary events are forgotten around them. A subscription may filter by event
type and scope; filtered-out events are not drops, and the sentinels always pass.

Closing: everything emitted is delivered, the sinks drain (a sink failure, even on
the last event, reaches the other sinks and every stream as an
``event_bus.sink_error`` diagnostic), then every stream ends.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from functools import partial
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Literal, Self, get_args

import attrs
import trio

from .._core.errors import EventBusClosed, EventBusConfigError, UsageError
from .._trio import single_exception
from .types import EVENT_TYPES, SENTINEL_SCOPES, DiagnosticEvent, Event, EventType

if TYPE_CHECKING:
    from .sinks import EventSink, SyncEventSink
    from .stream import EventStream

logger = logging.getLogger("weavegraph.event_bus")

Overflow = Literal["drop_oldest", "drop_newest", "block"]
OVERFLOW_POLICIES: tuple[str, ...] = get_args(Overflow)
DEFAULT_CAPACITY = 1024
SINK_ERROR_SCOPE = "event_bus.sink_error"
"""Scope of the diagnostic that reports a failing sink (SPEC §6)."""
_EMIT_ASYNC_YIELD_EVERY = 256
_CATCH_UP_ROUNDS = 2
CANCEL_DRAIN_TIMEOUT = 5.0
"""Seconds a cancelled ``async with bus:`` block waits for its sinks to drain."""


def _is_cancellation(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return any(_is_cancellation(e) for e in exc.exceptions)
    return isinstance(exc, trio.Cancelled | KeyboardInterrupt)


def sink_name(sink: object) -> str:
    """How reports name a sink: its ``name`` attribute, else its class name."""
    name = getattr(sink, "name", None)
    return name if isinstance(name, str) and name else type(sink).__name__


def is_sink_error(event: Event) -> bool:
    """Whether ``event`` reports a failing sink."""
    return type(event) is DiagnosticEvent and event.scope == SINK_ERROR_SCOPE


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


class EventFilter:
    """Which events a subscription receives (``subscribe(types=..., scopes=...)``).

    An event passes when its ``type`` is one of ``types`` (any type when ``None``)
    and its ``scope_label`` is one of ``scopes`` (any scope when ``None``); a scope
    ending in ``*`` is a prefix (``"llm.*"``, ``"tool_*"``, ``"*"``). The run
    sentinels always pass, so a filtered stream still ends.
    """

    __slots__ = ("_exact", "_prefixes", "scopes", "types")

    def __init__(self, types: frozenset[str] | None, scopes: tuple[str, ...] | None):
        self.types = types
        self.scopes = scopes
        self._exact = frozenset(s for s in scopes or () if not s.endswith("*"))
        self._prefixes = tuple(s[:-1] for s in scopes or () if s.endswith("*"))

    def __call__(self, event: Event) -> bool:
        if type(event) is DiagnosticEvent and event.scope in SENTINEL_SCOPES:
            return True
        if self.types is not None and event.type not in self.types:
            return False
        if self.scopes is None:
            return True
        label = event.scope_label
        return label in self._exact or label.startswith(self._prefixes)

    def may_accept(self, event_type: str, scopes: Iterable[str]) -> bool:
        """Whether an event of ``event_type`` with one of ``scopes`` would pass."""
        if self.types is not None and event_type not in self.types:
            return False
        if self.scopes is None:
            return True
        exact, prefixes = self._exact, self._prefixes
        return any(s in exact or s.startswith(prefixes) for s in scopes)

    def __repr__(self) -> str:
        return f"EventFilter(types={self.types!r}, scopes={self.scopes!r})"


def make_filter(types: object, scopes: object) -> EventFilter | None:
    """Validate ``subscribe``'s ``types`` and ``scopes``; ``None`` when both are.

    Raises:
        EventBusConfigError: a bare string instead of a collection, an unknown
            event type, or a scope that is not a non-empty string with at most a
            trailing ``*``.
    """
    if types is None and scopes is None:
        return None
    type_set: frozenset[str] | None = None
    if types is not None:
        if isinstance(types, str) or not isinstance(types, Iterable):
            raise EventBusConfigError(
                f"types must be a collection of event types, e.g. ('node', 'llm'),"
                f" got {types!r}"
            )
        type_set = frozenset(t for t in types if isinstance(t, str))
        unknown = sorted(repr(t) for t in types if t not in EVENT_TYPES)
        if unknown:
            raise EventBusConfigError(
                f"unknown event type {', '.join(unknown)}; types are chosen from"
                f" {', '.join(EVENT_TYPES)}"
            )
    scope_list: tuple[str, ...] | None = None
    if scopes is not None:
        if isinstance(scopes, str) or not isinstance(scopes, Iterable):
            raise EventBusConfigError(
                f"scopes must be a collection of scope labels, e.g. ('progress',"
                f" 'llm.*'), got {scopes!r}"
            )
        scope_list = tuple(scopes)
        for scope in scope_list:
            if not isinstance(scope, str) or not scope or "*" in scope[:-1]:
                raise EventBusConfigError(
                    f"bad scope filter {scope!r}: use an exact scope label or a"
                    " prefix followed by one '*' at the end (e.g. 'llm.*')"
                )
    return EventFilter(type_set, scope_list)


def _kept(event: Event) -> bool:
    """A run sentinel: never dropped by any overflow policy."""
    return type(event) is DiagnosticEvent and event.scope in SENTINEL_SCOPES


class Subscriber:
    """The bus side of one subscription: a bounded buffer and its counters."""

    __slots__ = (
        "backlog",
        "buffer",
        "burst",
        "capacity",
        "closed",
        "dropped",
        "ended",
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
        self.burst = 0  # dropped since the stream last caught up
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
            dropped = self._drop_oldest(batch)
        else:
            dropped = self._drop_newest(batch, free)
        if dropped:
            self.dropped += dropped
            self.burst += dropped
        if buffer and self.ready:
            self.ready.unpark_all()
        return dropped

    def _drop_oldest(self, batch: Sequence[Event]) -> int:
        # Forget the oldest ordinary events until the rest fits; sentinels among
        # them are kept, in order, in front of what remains.
        buffer = self.buffer
        excess = len(buffer) + len(batch) - self.capacity
        kept: list[Event] = []
        dropped = 0
        while excess > 0 and buffer:
            if excess >= len(buffer):
                gone = list(buffer)
                buffer.clear()
            else:
                gone = [buffer.popleft() for _ in range(excess)]
            saved = [e for e in gone if _kept(e)]
            kept += saved
            dropped += len(gone) - len(saved)
            excess -= len(gone) - len(saved)
        start = 0
        while excess > 0 and start < len(batch):
            gone = list(batch[start : start + excess])
            start += len(gone)
            saved = [e for e in gone if _kept(e)]
            kept += saved
            dropped += len(gone) - len(saved)
            excess -= len(gone) - len(saved)
        if kept:
            if buffer:  # only old events were forgotten: the kept ones were first
                buffer.extendleft(reversed(kept))
            else:
                buffer.extend(kept)
        buffer.extend(batch[start:] if start else batch)
        return dropped

    def _drop_newest(self, batch: Sequence[Event], free: int) -> int:
        # Refuse what does not fit, except sentinels: they go in anyway.
        buffer = self.buffer
        free = max(free, 0)
        buffer.extend(batch[:free])
        dropped = 0
        for event in batch[free:]:
            if _kept(event):
                buffer.append(event)
            else:
                dropped += 1
        return dropped

    def wants(self, event_type: str, scopes: Iterable[str]) -> bool:
        """Whether it takes events of ``event_type`` with one of ``scopes``."""
        return True

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
        elif not self.buffer and self.burst:
            self.end_burst()
        return event

    def end_burst(self) -> None:
        """Log the lag burst that just ended, with its real counts.

        A burst starts with the first drop and ends when the stream caught up
        (its buffer is empty), was closed, or its bus ended (no more drops can
        come); one warning per burst says how many it dropped and how many the
        stream dropped in all.
        """
        burst, self.burst = self.burst, 0
        if burst:
            logger.warning(
                "event stream lagged; dropped events (dropped=%d, total=%d,"
                " capacity=%d, policy=%s)",
                burst,
                self.dropped,
                self.capacity,
                self.overflow,
            )

    def end(self) -> None:
        """The bus delivers nothing more: wake the consumer and any producer."""
        if self.ended:
            return
        self.ended = True
        if self.burst:
            self.end_burst()
        self.ready.unpark_all()
        self.room.unpark_all()


class _FilteredSubscriber(Subscriber):
    """A `Subscriber` that only takes what its `EventFilter` accepts."""

    __slots__ = ("accepts",)

    def __init__(self, capacity: int, overflow: Overflow, accepts: EventFilter):
        super().__init__(capacity, overflow)
        self.accepts = accepts

    def wants(self, event_type: str, scopes: Iterable[str]) -> bool:
        return self.accepts.may_accept(event_type, scopes)

    def offer(self, batch: Sequence[Event]) -> int:
        accepts = self.accepts
        wanted = [event for event in batch if accepts(event)]
        return super().offer(wanted) if wanted else 0

    def offer_one(self, event: Event) -> int:
        return super().offer_one(event) if self.accepts(event) else 0


class EventBus:
    """Fans events out to every subscriber and sink, with bounded buffers.

    A bus is started by the runner that uses it, or by hand with ``async with
    bus:``; its broadcaster and sink tasks live in that block. Leaving the block
    closes the bus: everything already emitted is delivered, every sink is
    drained and closed, then every stream ends.

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
        # Closing, in order: the last batch is handed over (_flushed), the sinks
        # handled every event (_sinks_settled), they were closed (_sinks_done),
        # then every stream ends and the service stops (_finished).
        self._flushed = False
        self._sinks_settled = False
        self._busy_sinks = 0
        self._sinks_running = 0
        self._sinks_done = trio.Event()
        self._finished = trio.Event()
        send, recv = trio.open_memory_channel[None](1)
        self._inbox_send: trio.MemorySendChannel[None] = send
        self._inbox_recv: trio.MemoryReceiveChannel[None] = recv
        self._manager: AbstractAsyncContextManager[trio.Nursery] | None = None
        self._service_scope: trio.CancelScope | None = None
        # Sinks with ``handle_nowait`` are called as events are handed over
        # (no task, no buffer); the others each read a stream of their own.
        self._sync_sinks: list[tuple[int, SyncEventSink]] = []
        self._sink_streams: list[tuple[EventSink, EventStream]] = []
        self._stream_index: list[int] = []  # each stream sink's index in _sinks
        for index, sink in enumerate(self._sinks):
            self._attach(index, sink)

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
    def listening(self) -> bool:
        """Whether any stream or sink is subscribed (open) right now.

        Producers of events nobody could see may skip building them; an event
        emitted with nobody listening is counted and goes nowhere either way.
        """
        if self._sink_streams or self._sync_sinks:
            return True
        # A plain loop: cheaper than any() over a generator (called per node).
        for sub in self._subscribers:  # noqa: SIM110
            if not sub.closed:
                return True
        return False

    def listening_for(self, event_type: EventType, scopes: Iterable[str]) -> bool:
        """Whether an open stream or sink would receive an event of
        ``event_type`` whose scope is one of ``scopes``.

        Like `listening`, but a stream whose ``types``/``scopes`` filter
        refuses all such events does not count (sinks take every event): the
        runtime's lifecycle events are not built for a token stream or an
        ``updates`` stream.
        """
        if self._sink_streams or self._sync_sinks:
            return True
        for sub in self._subscribers:
            if not sub.closed and sub.wants(event_type, scopes):
                return True
        return False

    @property
    def sinks(self) -> tuple[EventSink, ...]:
        """The attached sinks."""
        return tuple(self._sinks)

    def metrics(self) -> BusMetrics:
        """Counters: capacity, published, dropped, subscribers, pending."""
        self._prune()
        return BusMetrics(
            capacity=self._capacity,
            published=self._published + len(self._batch),
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
        types: Iterable[EventType] | None = None,
        scopes: Iterable[str] | None = None,
    ) -> EventStream:
        """A new `EventStream` that sees every event emitted from now on.

        Args:
            capacity: Its buffer size (default: the bus capacity).
            overflow: Its overflow policy (default: the bus policy).
            stop_at_stream_end: End the stream right after the first stream-end
                sentinel instead of when the bus closes.
            types: Receive only events of these types (``"node"``,
                ``"diagnostic"``, ``"llm"``); ``None``: every type.
            scopes: Receive only events whose ``scope_label`` is one of these;
                a label ending in ``*`` is a prefix (``"llm.*"``). ``None``: every
                scope. With ``types`` too, an event must match both.

        The run sentinels (`STREAM_END_SCOPE`, `INVOCATION_END_SCOPE`) always pass
        the filter, so a filtered stream still ends; filtered-out events are not
        drops. A subscription made on a closed bus is already at its end.

        Raises:
            EventBusConfigError: invalid capacity, policy, types or scopes.
        """
        from .stream import EventStream

        size = check_capacity(capacity if capacity is not None else self._capacity)
        policy = check_overflow(overflow if overflow is not None else self._overflow)
        accepts = make_filter(types, scopes)
        sub = (
            Subscriber(size, policy)
            if accepts is None
            else _FilteredSubscriber(size, policy, accepts)
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
            raise UsageError(
                "add sinks before the bus starts, or pass them to EventBus(sinks=...)"
            )
        self._sinks.append(sink)
        self._attach(len(self._sinks) - 1, sink)

    def _attach(self, index: int, sink: EventSink) -> None:
        if callable(getattr(sink, "handle_nowait", None)):
            self._sync_sinks.append((index, sink))  # type: ignore[arg-type]
        else:
            self._sink_streams.append((sink, self.subscribe(overflow="block")))
            self._stream_index.append(index)

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
        if self._inline:
            self._published += 1
            if self._subscribers:
                self._deliver_one(event)
            if self._sync_sinks:
                self._to_sync_sinks((event,))
            return
        batch = self._batch  # counted as published when handed over (_flush)
        batch.append(event)
        if not self._notified:
            self._notified = True
            self._inbox_send.send_nowait(None)
        elif len(batch) >= self._capacity:
            self._flush()  # bounded memory, started or not

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
        """Publish ``event``, then let readers that are behind catch up.

        When no subscriber's buffer is full this costs little more than `emit`.
        When one is full (or the pending events would overflow it), the events
        are handed over at once and the caller waits: for ``"block"``
        subscribers until their backlog is delivered (end-to-end backpressure
        with bounded memory), for every policy until each reader that is ready
        to run had its turn (up to two scheduling rounds). A reader that keeps
        up with the scheduler therefore loses nothing on a lossy policy,
        whatever its capacity; one that is busy elsewhere is not waited for.

        A checkpoint: always a cancellation point; it yields to the scheduler
        whenever a buffer is full, and at least every 256 calls otherwise.
        Cancellation while it waits leaves the event published.

        Raises:
            EventBusClosed: the bus was closed.
        """
        self.emit(event)
        await trio.lowlevel.checkpoint_if_cancelled()
        pending = len(self._batch)
        for sub in self._subscribers:  # _someone_behind, inlined: the common path
            if (
                len(sub.buffer) + len(sub.backlog) + pending >= sub.capacity
                and not sub.closed
                and not sub.ended
            ):
                self._async_calls = 0
                await self._let_readers_catch_up()
                return
        self._async_calls += 1
        if self._async_calls >= _EMIT_ASYNC_YIELD_EVERY:
            self._async_calls = 0
            await trio.lowlevel.cancel_shielded_checkpoint()

    def _someone_behind(self) -> bool:
        """Whether a subscriber's buffer is full or the pending batch would fill it."""
        pending = len(self._batch)
        for sub in self._subscribers:
            if (
                len(sub.buffer) + len(sub.backlog) + pending >= sub.capacity
                and not sub.closed
                and not sub.ended
            ):
                return True
        return False

    async def _let_readers_catch_up(self) -> None:
        self._flush()  # readers see the events now, and the backlogs are exact
        for sub in tuple(self._subscribers):
            while sub.backlog and not sub.closed and not sub.ended:
                await sub.room.park()
        # A reader woken by the flush runs in the next scheduling round; this task
        # may run first in that round, hence up to two yields.
        for _ in range(_CATCH_UP_ROUNDS):
            await trio.lowlevel.cancel_shielded_checkpoint()
            if not self._someone_behind():
                return

    def _flush(self) -> None:
        batch = self._batch
        if not batch:
            return
        self._batch = []
        self._published += len(batch)
        self._fan_out(batch)

    def _to_sync_sinks(self, batch: Sequence[Event]) -> None:
        """Each event to every synchronous sink, in order; a failure is
        reported once every sink had the event (so it follows the event)."""
        sinks = self._sync_sinks
        for event in batch:
            failed = None
            for index, sink in sinks:
                try:
                    sink.handle_nowait(event)
                except Exception as exc:  # a failing sink never stops the run
                    failed = [*(failed or ()), (index, sink, exc)]
            if failed:
                for index, sink, error in failed:
                    self._report_sink_error(index, sink, error, event)

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
        if self._sync_sinks:  # after the streams: a report follows its event
            self._to_sync_sinks(batch)

    # ----------------------------------------------------------------------- sinks

    async def _run_sink(self, index: int, sink: EventSink, stream: EventStream) -> None:
        try:
            with stream:
                async for event in stream:
                    self._busy_sinks += 1
                    try:
                        await sink.handle(event)
                    except Exception as exc:  # a failing sink never stops the run
                        self._report_sink_error(index, sink, exc, event)
                    finally:
                        self._busy_sinks -= 1
                    if self._flushed:
                        self._check_sinks_settled()
                await self._close_sink(index, sink)
        finally:
            self._sinks_running -= 1
            if not self._sinks_running:
                self._sinks_done.set()

    def _check_sinks_settled(self) -> None:
        """After the last flush: end the sinks' streams once no sink has work left.

        A sink failure is delivered to the other sinks, so a sink's stream may end
        only when every sink handled every event; failures while handling a
        sink-error report are not reported again, so this always settles.
        """
        if self._sinks_settled or not self._flushed or self._busy_sinks:
            return
        subs = [stream._sub for _, stream in self._sink_streams]
        if any(sub.buffer or sub.backlog for sub in subs if not sub.closed):
            return
        self._sinks_settled = True
        for sub in subs:
            sub.end()

    def _report_sink_error(
        self,
        index: int,
        sink: EventSink | SyncEventSink,
        exc: Exception,
        event: Event | None,
    ) -> None:
        """Deliver a failure of ``sink`` as an ``event_bus.sink_error`` diagnostic.

        Every stream and every other sink sees it, even while the bus closes;
        ``event`` is the event being handled (``None``: the sink's ``aclose``).
        """
        name = sink_name(sink)
        error = f"{type(exc).__name__}: {exc}"
        during = "handle" if event is not None else "aclose"
        logger.error("event sink %s failed in %s: %s", name, during, error)
        if event is not None and is_sink_error(event):
            return  # reporting failures to handle reports could go on forever
        report = DiagnosticEvent(
            scope=SINK_ERROR_SCOPE,
            message=f"{name}: {error}",
            metadata=MappingProxyType(
                {
                    "sink": name,
                    "sink_index": index,
                    "during": during,
                    "error": error,
                    "error_type": type(exc).__name__,
                    "event_scope": None if event is None else event.scope_label,
                }
            ),
        )
        own = next(
            (
                stream._sub
                for i, (_, stream) in zip(
                    self._stream_index, self._sink_streams, strict=True
                )
                if i == index
            ),
            None,
        )
        sink_subs = {id(stream._sub) for _, stream in self._sink_streams}
        if not self._inline:
            self._flush()  # what was emitted before the failure goes first
        self._published += 1
        for sub in tuple(self._subscribers):
            if sub is own or sub.closed or sub.ended:
                continue
            if event is None and id(sub) in sink_subs:
                continue  # the sinks are closing; the streams still see it
            dropped = sub.offer((report,))
            if dropped:
                self._dropped_total += dropped
        if event is not None:
            for other, sync in self._sync_sinks:
                if other != index:
                    try:
                        sync.handle_nowait(report)
                    except Exception as exc:
                        self._report_sink_error(other, sync, exc, report)

    async def _close_sync_sinks(self) -> None:
        """Await each synchronous sink's ``aclose`` (after its last event)."""
        for index, sink in self._sync_sinks:
            await self._close_sink(index, sink)

    async def _close_sink(self, index: int, sink: EventSink | SyncEventSink) -> None:
        """Await ``sink``'s optional ``aclose``; a failure is reported."""
        close = getattr(sink, "aclose", None)
        if close is not None:
            try:
                await close()
            except Exception as exc:
                self._report_sink_error(index, sink, exc, None)

    # ------------------------------------------------------------------- lifecycle

    async def _broadcast(self) -> None:
        with self._inbox_recv:
            async for _ in self._inbox_recv:
                self._notified = False
                self._flush()
        self._flush()
        await self._close_sync_sinks()
        self._flushed = True
        self._check_sinks_settled()
        await self._sinks_done.wait()
        self._end_all()

    def _end_all(self) -> None:
        for sub in self._subscribers:
            sub.end()

    async def serve(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the broadcaster and the sink tasks until the bus is closed and drained.

        For ``nursery.start(bus.serve)``; ``async with bus:`` does this for you.
        Cancelling it stops the tasks at once (sinks may then miss the last events)
        and ends every stream.
        """
        await self._serve(shielded=False, task_status=task_status)

    async def _serve(
        self,
        *,
        shielded: bool,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        if self._started:
            raise UsageError("this EventBus was already started; a bus runs once")
        self._started = True
        self._sinks_running = len(self._sink_streams)
        if not self._sinks_running:
            self._sinks_done.set()
        try:
            # Shielded when owned by ``async with bus:``: its __aexit__ decides
            # how long the sinks may drain, even when the block was cancelled.
            with trio.CancelScope(shield=shielded) as scope:
                self._service_scope = scope
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._broadcast)
                    for index, (sink, stream) in zip(
                        self._stream_index, self._sink_streams, strict=True
                    ):
                        nursery.start_soon(self._run_sink, index, sink, stream)
                    task_status.started()
        finally:
            self.close()
            self._end_all()  # normally done already; not when cancelled
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
            self._end_all()

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
            if self._sync_sinks:
                with trio.CancelScope(shield=True):  # as a drain would be
                    await self._close_sync_sinks()
            else:
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
