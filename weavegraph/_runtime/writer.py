"""The write-behind checkpoint writer of an `AppRunner`.

Each superstep hands its checkpoint to the writer, which stores what has
accumulated in one transaction per batch, so a fast run is not slowed down by a
thread hop per step. `CheckpointWriter.flush` waits until everything handed over
is stored. A crash loses at most the checkpoints not yet flushed: a resumed
session continues from its last stored step, which is always a complete one.
"""

from __future__ import annotations

import logging

import trio

from .._core.errors import CheckpointError
from ..checkpoint.record import Checkpoint, Checkpointer

logger = logging.getLogger("weavegraph.runner")

FLUSH_TIMEOUT = 10.0
"""Seconds a cancelled run waits for its last checkpoints to be stored."""

_QUEUE_SIZE = 256


class CheckpointWriter:
    """Stores checkpoints behind the run, from a task of the runner's nursery."""

    def __init__(self, checkpointer: Checkpointer, nursery: trio.Nursery) -> None:
        self.checkpointer = checkpointer
        self._send, self._receive = trio.open_memory_channel[Checkpoint](_QUEUE_SIZE)
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
                        await self._store(self._batch(first))
        finally:
            self._done.set()
            self._idle.set()

    def _batch(self, first: Checkpoint) -> list[Checkpoint]:
        # Everything queued goes in one transaction: a fast run hands over many
        # checkpoints between two yields.
        batch = [first]
        while True:
            try:
                batch.append(self._receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                return batch

    async def _store(self, batch: list[Checkpoint]) -> None:
        try:
            save_many = getattr(self.checkpointer, "save_many", None)
            if save_many is not None:
                await save_many(batch)
            else:
                for checkpoint in batch:
                    await self.checkpointer.save(checkpoint)
        except Exception as exc:
            logger.error("checkpoint write failed: %s", exc)
            self._error = exc
        self._queued -= len(batch)
        if self._queued == 0:
            self._idle.set()

    async def put(self, checkpoint: Checkpoint) -> None:
        """Hand ``checkpoint`` over; waits only when the queue is full.

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
        """Raise `CheckpointError` if a write failed."""
        if self._error is not None:
            raise CheckpointError(
                f"storing checkpoints failed: {self._error}"
            ) from self._error

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
