"""`Invocation`: a handle on a run that lives in a nursery."""

from __future__ import annotations

from typing import final

import trio

from .._core.errors import RunCancelledError
from .._core.state import VersionedState


@final
class Invocation:
    """A run started by ``App.invoke_streaming`` or ``App.start_streaming``.

    Cancel it with `cancel` (or through `cancel_scope`); wait for it with `join`.

    Attributes:
        session_id: The run's session id.
        cancel_scope: The scope the run executes in.
    """

    __slots__ = ("_error", "_finished", "_result", "cancel_scope", "session_id")

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.cancel_scope = trio.CancelScope()
        self._finished = trio.Event()
        self._result: VersionedState | None = None
        self._error: BaseException | None = None

    @property
    def done(self) -> bool:
        """Whether the run finished (completed, failed or cancelled)."""
        return self._finished.is_set()

    @property
    def cancelled(self) -> bool:
        """Whether the run ended cancelled (by `cancel` or from outside)."""
        return self.done and self._result is None and self._error is None

    def cancel(self, reason: str | None = None) -> None:
        """Cancel the run: its nodes see ``trio.Cancelled`` at their next checkpoint.

        Not a checkpoint; idempotent; harmless once the run is done.
        """
        self.cancel_scope.cancel(reason)

    async def join(self) -> VersionedState:
        """Wait for the run and return its final state.

        A checkpoint. Cancelling the caller does not cancel the run.

        Raises:
            WorkflowError: the run failed.
            RunCancelledError: the run was cancelled before it finished.
        """
        await self._finished.wait()
        if self._error is not None:
            raise self._error
        if self._result is None:
            raise RunCancelledError(
                f"run {self.session_id} was cancelled before it finished"
            )
        return self._result

    @property
    def completed_early(self) -> bool:
        """Whether the run recorded its final state (its sentinel said completed)."""
        return self._result is not None

    def _record_result(self, state: VersionedState) -> None:
        """The run completed: from now on it counts as completed.

        `join` returns at once; the run's task may still be closing its runner
        (sinks draining), which no longer changes the outcome.
        """
        self._result = state
        self._finished.set()

    def _set_error(self, error: BaseException) -> None:
        if not self._finished.is_set():
            self._error = error

    def _finish(self) -> None:
        """The run's task ended: `join` returns (cancelled if nothing recorded)."""
        self._finished.set()

    def __repr__(self) -> str:
        status = (
            "running"
            if not self.done
            else "failed"
            if self._error is not None
            else "cancelled"
            if self._result is None
            else "completed"
        )
        return f"<Invocation {self.session_id} {status}>"
