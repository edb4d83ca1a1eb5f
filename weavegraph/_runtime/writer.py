"""The write-behind checkpoint writer of an `AppRunner`.

Each superstep hands its checkpoint to the writer, which stores what has
accumulated in one transaction per batch, so a fast run is not slowed down by a
thread hop per step. `CheckpointWriter.flush` waits until everything handed over
is stored. A crash loses at most the checkpoints not yet flushed: a resumed
session continues from its last stored step, which is always a complete one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import attrs
import trio

from .._core.errors import CheckpointError
from ..checkpoint.record import Checkpoint, Checkpointer

logger = logging.getLogger("weavegraph.runner")

FLUSH_TIMEOUT = 10.0
"""Seconds a cancelled run waits for its last checkpoints to be stored."""

_QUEUE_SIZE = 256


@attrs.frozen
class PendingRecord:
    """A session's pending record, to attach to its step ``base_step``."""

    session_id: str
    base_step: int
    record: Mapping[str, Any] | None


_Item = Checkpoint | PendingRecord


class CheckpointWriter:
    """Stores checkpoints behind the run, from a task of the runner's nursery."""

    def __init__(self, checkpointer: Checkpointer, nursery: trio.Nursery) -> None:
        self.checkpointer = checkpointer
        self._send, self._receive = trio.open_memory_channel[_Item](_QUEUE_SIZE)
        self._queued = 0
        self._idle = trio.Event()
        self._idle.set()
        self._error: BaseException | None = None
        self._scope: trio.CancelScope | None = None
        self._done = trio.Event()
        nursery.start_soon(self._run)

    async def _run(self) -> None:
        # Shielded: the runner's exit decides how long pending writes may take.
        try:
            with trio.CancelScope(shield=True) as scope:
                self._scope = scope
                with self._receive:
                    async for first in self._receive:
                        for run in _runs(self._batch(first)):
                            await self._store(run)
        finally:
            self._done.set()
            self._idle.set()

    def _batch(self, first: _Item) -> list[_Item]:
        # Everything queued goes in one transaction: a fast run hands over many
        # checkpoints between two yields.
        batch = [first]
        while True:
            try:
                batch.append(self._receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                return batch

    async def _store(self, run: list[_Item]) -> None:
        # After a failure nothing more is stored: the parent chain broke, and the
        # error surfaces on the next put or flush.
        if self._error is None:
            try:
                await self._write(run)
            except Exception as exc:
                logger.error("checkpoint write failed: %s", exc)
                self._error = exc
        self._queued -= len(run)
        if self._queued == 0:
            self._idle.set()

    async def _write(self, run: list[_Item]) -> None:
        if isinstance(run[0], PendingRecord):
            for item in run:
                assert isinstance(item, PendingRecord)
                await self.checkpointer.save_pending(
                    item.session_id, item.base_step, item.record
                )
        else:
            # Each checkpoint names the step it follows: a writer that lost the
            # race for a session gets CheckpointConflict, atomically.
            await self.checkpointer.append(
                [item for item in run if isinstance(item, Checkpoint)]
            )

    async def put(self, checkpoint: _Item) -> None:
        """Hand a checkpoint (or a pending record) over; waits only when full.

        Raises:
            CheckpointError: an earlier write failed.
        """
        self.raise_error()
        self._queued += 1
        if self._idle.is_set():
            self._idle = trio.Event()
        try:
            # No yield per step: the writer picks the queue up whenever the run
            # yields (at least every few milliseconds), in one batch.
            self._send.send_nowait(checkpoint)
        except trio.WouldBlock:
            await self._send.send(checkpoint)

    def raise_error(self) -> None:
        """Raise the write error, if a write failed.

        A `CheckpointError` (``CheckpointConflict`` among them) comes out as it
        is; anything else is wrapped in one.
        """
        error = self._error
        if isinstance(error, CheckpointError):
            raise error
        if error is not None:
            raise CheckpointError(f"storing checkpoints failed: {error}") from error

    async def flush(self) -> None:
        """Wait until every checkpoint handed over is stored. A checkpoint.

        Raises:
            CheckpointError: a write failed.
        """
        if self._queued:
            await self._idle.wait()
        else:
            await trio.lowlevel.checkpoint()
        self.raise_error()

    async def flush_after(self, exc: BaseException) -> None:
        """Store what a failed or cancelled run handed over; ``exc`` then goes on.

        After a cancellation the flush is shielded and bounded by `FLUSH_TIMEOUT`.
        A write error here is only logged: the original exception matters more.
        """
        try:
            if isinstance(exc, trio.Cancelled | KeyboardInterrupt):
                with trio.CancelScope(shield=True), trio.move_on_after(FLUSH_TIMEOUT):
                    await self.flush()
            else:
                await self.flush()
        except CheckpointError as write_error:
            logger.error("checkpoints of a failed run were not stored: %s", write_error)

    async def close(self, cancelled: bool) -> None:
        """Stop taking checkpoints and wait for the queue to drain.

        When ``cancelled`` the wait is shielded and bounded by `FLUSH_TIMEOUT`.
        """
        self._send.close()
        if cancelled:
            with trio.CancelScope(shield=True), trio.move_on_after(FLUSH_TIMEOUT):
                await self._done.wait()
        else:
            await self._done.wait()
        if self._scope is not None:
            self._scope.cancel()


def _runs(batch: list[_Item]) -> list[list[_Item]]:
    """Split ``batch`` into runs of checkpoints and runs of pending records."""
    runs: list[list[_Item]] = []
    for item in batch:
        if runs and type(runs[-1][0]) is type(item):
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs
