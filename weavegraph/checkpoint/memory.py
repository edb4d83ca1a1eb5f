"""`InMemoryCheckpointer`: checkpoints kept in this process (tests, demos)."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from typing import Self

import trio

from .._core.errors import CheckpointConflict
from .record import (
    Checkpoint,
    SessionSummary,
    StepPage,
    check_query,
)


class InMemoryCheckpointer:
    """Keeps every step of every session in memory.

    Steps share their message history (states are immutable and share storage),
    so keeping all of them costs little. Operations never block; each is atomic.
    """

    backend = "in-memory"

    def __init__(self) -> None:
        self._steps: dict[str, dict[int, Checkpoint]] = {}
        self._latest: dict[str, int] = {}
        self._created: dict[str, _dt.datetime] = {}
        self._updated: dict[str, _dt.datetime] = {}

    def __repr__(self) -> str:
        return f"InMemoryCheckpointer({len(self._steps)} sessions)"

    def _store(self, checkpoint: Checkpoint) -> None:
        sid = checkpoint.session_id
        now = _dt.datetime.now(_dt.UTC)
        self._steps.setdefault(sid, {})[checkpoint.step] = checkpoint
        self._created.setdefault(sid, now)
        self._updated[sid] = now
        # Monotonic: an out-of-order write never moves the latest step back.
        self._latest[sid] = max(self._latest.get(sid, checkpoint.step), checkpoint.step)

    async def save(self, checkpoint: Checkpoint) -> None:
        """Store ``checkpoint``."""
        self._store(checkpoint)
        await trio.lowlevel.checkpoint()

    async def save_many(self, checkpoints: Sequence[Checkpoint]) -> None:
        """Store several checkpoints."""
        for checkpoint in checkpoints:
            self._store(checkpoint)
        await trio.lowlevel.checkpoint()

    async def save_with_concurrency_check(
        self, checkpoint: Checkpoint, expected_last_step: int | None
    ) -> None:
        """Store only if the session ends at ``expected_last_step`` (atomic)."""
        await trio.lowlevel.checkpoint()
        found = self._latest.get(checkpoint.session_id)
        if found != expected_last_step:
            raise CheckpointConflict(checkpoint.session_id, expected_last_step, found)
        self._store(checkpoint)

    async def load_latest(self, session_id: str) -> Checkpoint | None:
        """The newest checkpoint of ``session_id``, or ``None``."""
        await trio.lowlevel.checkpoint()
        step = self._latest.get(session_id)
        return None if step is None else self._steps[session_id][step]

    async def list_sessions(self) -> list[SessionSummary]:
        """Every session, most recently updated first."""
        await trio.lowlevel.checkpoint()
        order = sorted(self._steps, key=lambda s: (self._updated[s], s), reverse=True)
        return [
            SessionSummary(
                session_id=sid,
                last_step=self._latest[sid],
                created_at=self._created[sid],
                updated_at=self._updated[sid],
                graph_hash=self._steps[sid][self._latest[sid]].graph_hash,
            )
            for sid in order
        ]

    async def query_steps(
        self,
        session_id: str,
        *,
        limit: int = 100,
        offset: int = 0,
        min_step: int | None = None,
        max_step: int | None = None,
        ran_node: str | None = None,
        skipped_node: str | None = None,
    ) -> StepPage:
        """A page of the session's steps, newest first; node filters are exact."""
        check_query(limit, offset)
        await trio.lowlevel.checkpoint()
        matching = [
            cp
            for step, cp in sorted(
                self._steps.get(session_id, {}).items(), reverse=True
            )
            if (min_step is None or step >= min_step)
            and (max_step is None or step <= max_step)
            and (ran_node is None or ran_node in cp.ran_nodes)
            and (skipped_node is None or skipped_node in cp.skipped_nodes)
        ]
        return StepPage(
            checkpoints=tuple(matching[offset : offset + limit]),
            total=len(matching),
            offset=offset,
            limit=limit,
        )

    async def delete_session(self, session_id: str) -> bool:
        """Forget the session; whether it existed."""
        await trio.lowlevel.checkpoint()
        existed = self._steps.pop(session_id, None) is not None
        self._latest.pop(session_id, None)
        self._created.pop(session_id, None)
        self._updated.pop(session_id, None)
        return existed

    async def open(self) -> None:
        """Nothing to open."""
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        """Nothing to release."""
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
