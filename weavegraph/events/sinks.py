"""Event sinks: consumers attached to a bus, each running as its own task.

A sink is any object with ``async def handle(self, event)``; an optional
``async def aclose(self)`` is awaited when the bus closes, after the sink saw every
event. A sink whose work never waits may offer ``def handle_nowait(self, event)``
instead (a `SyncEventSink`): the bus then calls it as each event is handed
over, in order, with no task or buffer of its own (cheaper for a bus per run);
it must not block. A sink that raises keeps receiving events and never stops
the run or the other sinks: each failure is an ``event_bus.sink_error``
diagnostic that every stream and every other sink of the bus sees, even on the
bus's last event, with metadata naming the sink (``sink``, its ``name``
attribute or class name, and ``sink_index``), ``during`` (``"handle"`` or
``"aclose"``), ``error``,
``error_type`` and ``event_scope``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import IO, Protocol, runtime_checkable

import trio

from .._core.errors import StateError
from .types import Event


@runtime_checkable
class EventSink(Protocol):
    """Anything with ``async def handle(self, event)``."""

    async def handle(self, event: Event) -> None:
        """Consume one event."""
        ...


@runtime_checkable
class SyncEventSink(Protocol):
    """A sink the bus calls directly: ``def handle_nowait(self, event)``.

    Called for every event as it is handed over (from ``emit``, or from the
    bus's broadcaster), in order; it must not block or wait. It may also have
    ``async def aclose(self)``, awaited once after its last event. What it
    raises is reported like any sink's failure.
    """

    def handle_nowait(self, event: Event) -> None:
        """Consume one event, without waiting."""
        ...


class StdOutSink:
    """Prints each event as one line (``[node@step] message``) to a text stream.

    Args:
        stream: Where to write (default: ``sys.stdout`` at the time of writing).
        show_scope: Prefix each line with the event's scope label.
    """

    def __init__(
        self, stream: IO[str] | None = None, *, show_scope: bool = False
    ) -> None:
        self._stream = stream
        self._show_scope = show_scope

    async def handle(self, event: Event) -> None:
        """Write the event's line."""
        stream = self._stream if self._stream is not None else sys.stdout
        text = str(event)
        if self._show_scope:
            text = f"{event.scope_label}: {text}"
        stream.write(text + "\n")
        if not event.is_stream_end:
            return
        stream.flush()

    async def aclose(self) -> None:
        """Flush the stream."""
        stream = self._stream if self._stream is not None else sys.stdout
        stream.flush()
        await trio.lowlevel.checkpoint()


class MemorySink:
    """Keeps every event in `events`, in order (handy in tests)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def handle(self, event: Event) -> None:
        """Append the event."""
        self.events.append(event)

    def clear(self) -> None:
        """Forget the stored events."""
        self.events.clear()


class ChannelSink:
    """Forwards each event into a trio send channel.

    It waits when the channel is full (backpressure to this sink only). When the
    receiving side is gone, each event fails with ``trio.BrokenResourceError``,
    reported as a sink error. The channel is closed with the bus unless
    ``close_channel=False``.
    """

    def __init__(
        self, send_channel: trio.abc.SendChannel[Event], *, close_channel: bool = True
    ) -> None:
        self._send = send_channel
        self._close_channel = close_channel

    async def handle(self, event: Event) -> None:
        """Send the event on the channel."""
        await self._send.send(event)

    async def aclose(self) -> None:
        """Close the channel (if asked to), so its receiver sees the end."""
        if self._close_channel:
            await self._send.aclose()


class JsonLinesSink:
    """Writes each event's normalized JSON, one object per line.

    Args:
        target: A file path (created or truncated at the first event, appended to
            when the sink is used again after closing), or an open text stream.
        pretty: Indent each object (no longer strictly JSON Lines).

    File writes run in a worker thread (one write and flush per event), so a slow
    disk never blocks the trio loop.
    """

    def __init__(
        self, target: str | os.PathLike[str] | IO[str], *, pretty: bool = False
    ) -> None:
        self._pretty = pretty
        self._path: Path | None = None
        self._stream: IO[str] | None = None
        self._owned: IO[str] | None = None
        self._opened_before = False
        if isinstance(target, str | os.PathLike):
            self._path = Path(target)
        elif hasattr(target, "write"):
            self._stream = target
        else:
            raise StateError(
                f"JsonLinesSink takes a file path or a text stream, got {target!r}"
            )

    @property
    def name(self) -> str:
        """``JsonLinesSink`` or ``JsonLinesSink(pretty)``."""
        return "JsonLinesSink(pretty)" if self._pretty else "JsonLinesSink"

    def _line(self, event: Event) -> str:
        return event.to_json_str(pretty=self._pretty) + "\n"

    async def handle(self, event: Event) -> None:
        """Write the event's JSON line and flush."""
        line = self._line(event)
        if self._stream is not None:
            self._stream.write(line)
            self._stream.flush()
            await trio.lowlevel.checkpoint()
            return
        await trio.to_thread.run_sync(self._write_file, line)

    def _write_file(self, line: str) -> None:
        if self._owned is None:
            assert self._path is not None
            mode = "a" if self._opened_before else "w"
            self._owned = self._path.open(mode, encoding="utf-8")
            self._opened_before = True
        self._owned.write(line)
        self._owned.flush()

    async def aclose(self) -> None:
        """Close the file this sink opened (a stream given to it stays open)."""
        owned, self._owned = self._owned, None
        if owned is not None:
            await trio.to_thread.run_sync(owned.close)
        else:
            await trio.lowlevel.checkpoint()


class LoggingSink:
    """Logs each event through a `logging.Logger` (default ``weavegraph.events``).

    Args:
        logger: The logger, or its name.
        level: The level of every record.
    """

    def __init__(
        self, logger: logging.Logger | str | None = None, level: int = logging.INFO
    ) -> None:
        if logger is None or isinstance(logger, str):
            logger = logging.getLogger(logger or "weavegraph.events")
        self._logger = logger
        self._level = level

    async def handle(self, event: Event) -> None:
        """Log ``<scope>: <event text>`` with the event as ``extra={'event': ...}``."""
        self._logger.log(
            self._level, "%s: %s", event.scope_label, event, extra={"event": event}
        )
