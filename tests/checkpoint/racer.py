"""Writers racing on one session, for the race tests: threads and processes.

Each writer opens its own store (its own connections), waits at a barrier
before every trial, then tries to store the same steps with its own marker.
"""

from __future__ import annotations

from typing import Any

import trio

from weavegraph import (
    CheckpointConflict,
    NodePartial,
    PostgresCheckpointer,
    SQLiteCheckpointer,
    VersionedState,
)
from weavegraph.lowlevel import Checkpoint, apply_barrier


def open_store(kind: str, target: str) -> Any:
    if kind == "sqlite":
        return SQLiteCheckpointer(target)
    return PostgresCheckpointer(target)


def base(session: str, steps: int) -> list[Checkpoint]:
    """Steps 0..steps of a session, each after the previous one."""
    state = VersionedState.with_user_message("hi")
    out = [Checkpoint(session_id=session, step=0, state=state, frontier=["n"])]
    for i in range(1, steps + 1):
        state = apply_barrier(state, ["n"], [NodePartial(extra={"i": i})]).state
        out.append(
            Checkpoint(session_id=session, step=i, state=state, parent_step=i - 1)
        )
    return out


def attempt(after: Checkpoint | None, session: str, marker: str) -> list[Checkpoint]:
    """Three steps continuing ``after`` (``None``: a new session), marked."""
    if after is None:
        state = VersionedState(extra={"who": marker})
        first = Checkpoint(session_id=session, step=0, state=state, frontier=["n"])
    else:
        state = apply_barrier(
            after.state, ["n"], [NodePartial(extra={"who": marker})]
        ).state
        first = Checkpoint(
            session_id=session, step=after.step + 1, state=state, parent_step=after.step
        )
    out = [first]
    for _ in range(2):
        prev = out[-1]
        state = apply_barrier(
            prev.state, ["n"], [NodePartial(extra={"n": prev.step})]
        ).state
        out.append(
            Checkpoint(
                session_id=session,
                step=prev.step + 1,
                state=state,
                parent_step=prev.step,
            )
        )
    return out


def race(
    kind: str,
    target: str,
    marker: str,
    trials: int,
    continue_from: int | None,
    barrier: Any,
) -> list[str]:
    """Run ``trials`` races (blocking: call it in a thread or a process).

    Returns, per trial, ``marker`` when this writer's batch was stored, else
    ``"lost"`` (it got `CheckpointConflict`).
    """

    async def main() -> list[str]:
        out = []
        async with open_store(kind, target) as store:
            for trial in range(trials):
                session = f"race-{trial}"
                after = None
                if continue_from is not None:
                    after = base(session, continue_from)[-1]
                batch = attempt(after, session, marker)
                await trio.to_thread.run_sync(barrier.wait)
                try:
                    await store.append(batch)
                    out.append(marker)
                except CheckpointConflict:
                    out.append("lost")
        return out

    return trio.run(main)


def race_in_process(
    kind: str,
    target: str,
    marker: str,
    trials: int,
    continue_from: int | None,
    barrier: Any,
    results: Any,
) -> None:
    """`race` as a process target: puts (marker, outcomes) on ``results``."""
    results.put((marker, race(kind, target, marker, trials, continue_from, barrier)))
