"""`InMemoryCheckpointer`: checkpoints kept in this process (tests, demos)."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import trio

from .._core.errors import CheckpointConflict, CheckpointError
from .._core.session import check_session_id
from ._rows import copy_pending
from .record import (
    Checkpoint,
    Checkpointer,
    SessionSummary,
    StepPage,
    check_chain,
    check_query,
)


@attrs.define
class _Session:
    steps: dict[int, Checkpoint]
    latest: int
    created: _dt.datetime
    updated: _dt.datetime
    pending: Mapping[str, Any] | None = None
    forked_from: tuple[str, int] | None = None


class InMemoryCheckpointer(Checkpointer):
    """Keeps every step of every session in memory.

    Steps share their message history (states are immutable and share storage),
    so keeping all of them costs little. Every operation is atomic (it never
    yields between checking and writing) and a trio checkpoint. Pending records
    go through the same value encoding as the SQL stores', so what comes back
    is what any store would give back.
    """

    def __init__(self) -> None:
        self._sessions: dict[str, _Session] = {}

    def __repr__(self) -> str:
        return f"InMemoryCheckpointer({len(self._sessions)} sessions)"

    @property
    def backend(self) -> str:
        """``"memory"``."""
        return "memory"

    def _check(self, checkpoints: Sequence[Checkpoint]) -> list[Checkpoint]:
        out = []
        for checkpoint in checkpoints:
            if not isinstance(checkpoint, Checkpoint):
                raise CheckpointError(f"expected a Checkpoint, got {checkpoint!r}")
            check_session_id(checkpoint.session_id)
            pending = checkpoint.pending
            if pending is not None:
                checkpoint = attrs.evolve(checkpoint, pending=copy_pending(pending))
            out.append(checkpoint)
        return out

    def _store(self, checkpoint: Checkpoint) -> None:
        sid = checkpoint.session_id
        now = _dt.datetime.now(_dt.UTC)
        pending = checkpoint.pending
        if pending is not None:
            checkpoint = attrs.evolve(checkpoint, pending=None)
        session = self._sessions.get(sid)
        if session is None:
            session = _Session(
                {}, checkpoint.step, now, now, forked_from=checkpoint.forked_from
            )
            self._sessions[sid] = session
        elif checkpoint.forked_from != session.forked_from:
            # The origin is the session's, set by its first checkpoint.
            checkpoint = attrs.evolve(checkpoint, forked_from=session.forked_from)
        session.steps[checkpoint.step] = checkpoint
        session.updated = now
        # Monotonic: an out-of-order write never moves the latest step back.
        if checkpoint.step >= session.latest:
            session.latest = checkpoint.step
            session.pending = pending

    async def append(self, checkpoints: Sequence[Checkpoint]) -> None:
        """Store ``checkpoints``, each after its parent, all or nothing.

        Raises:
            CheckpointConflict: a parent is not the session's latest step.
        """
        await trio.lowlevel.checkpoint()
        checked = self._check(checkpoints)
        latest = {}
        for checkpoint in checked:
            session = self._sessions.get(checkpoint.session_id)
            if session is not None:
                latest[checkpoint.session_id] = session.latest
        check_chain(checked, latest)
        for checkpoint in checked:
            self._store(checkpoint)

    async def save_many(self, checkpoints: Sequence[Checkpoint]) -> None:
        """Store several checkpoints unconditionally."""
        await trio.lowlevel.checkpoint()
        for checkpoint in self._check(checkpoints):
            self._store(checkpoint)

    async def save_pending(
        self, session_id: str, base_step: int, pending: Mapping[str, Any] | None
    ) -> None:
        """Attach ``pending`` to the session's latest step (``None``: clear it).

        Raises:
            CheckpointConflict: ``base_step`` is not the session's latest step.
        """
        await trio.lowlevel.checkpoint()
        value = None if pending is None else copy_pending(pending)
        session = self._sessions.get(session_id)
        found = None if session is None else session.latest
        if session is None or found != base_step:
            raise CheckpointConflict(session_id, base_step, found)
        session.pending = value
        session.updated = _dt.datetime.now(_dt.UTC)

    def _with_pending(self, session: _Session, checkpoint: Checkpoint) -> Checkpoint:
        if session.pending is None or checkpoint.step != session.latest:
            return checkpoint
        return attrs.evolve(checkpoint, pending=session.pending)

    async def load_latest(self, session_id: str) -> Checkpoint | None:
        """The session's newest checkpoint with its pending record, or ``None``."""
        await trio.lowlevel.checkpoint()
        session = self._sessions.get(session_id)
        if session is None:
            return None
        return self._with_pending(session, session.steps[session.latest])

    async def list_sessions(self) -> list[SessionSummary]:
        """Every session, most recently updated first."""
        await trio.lowlevel.checkpoint()
        order = sorted(
            self._sessions.items(), key=lambda i: (i[1].updated, i[0]), reverse=True
        )
        return [
            SessionSummary(
                session_id=sid,
                last_step=s.latest,
                created_at=s.created,
                updated_at=s.updated,
                graph_hash=s.steps[s.latest].graph_hash,
                forked_from=s.forked_from,
            )
            for sid, s in order
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
        session = self._sessions.get(session_id)
        steps = {} if session is None else session.steps
        matching = [
            cp
            for step, cp in sorted(steps.items(), reverse=True)
            if (min_step is None or step >= min_step)
            and (max_step is None or step <= max_step)
            and (ran_node is None or ran_node in cp.ran_nodes)
            and (skipped_node is None or skipped_node in cp.skipped_nodes)
        ]
        page = matching[offset : offset + limit]
        if session is not None:
            page = [self._with_pending(session, cp) for cp in page]
        return StepPage(
            checkpoints=tuple(page), total=len(matching), offset=offset, limit=limit
        )

    async def delete_session(self, session_id: str) -> bool:
        """Forget the session; whether it existed."""
        await trio.lowlevel.checkpoint()
        return self._sessions.pop(session_id, None) is not None

    async def aclose(self) -> None:
        """Nothing to release."""
        await trio.lowlevel.checkpoint()
