"""The scheduling memory of one session: state, step, frontier, gating, joins."""

from __future__ import annotations

import attrs

from .frontier import JoinProgress
from .state import VersionedState


@attrs.define(kw_only=True)
class Session:
    """Everything needed to continue a run from between two supersteps.

    Attributes:
        session_id: The session's id.
        state: The current state.
        step: The last superstep that ran (0 before the first).
        frontier: The nodes of the next superstep, in order.
        versions_seen: Per node, the (messages, extra) versions it last ran at.
        join_progress: Per join, the sources that ran since its target last ran.
    """

    session_id: str
    state: VersionedState
    step: int = 0
    frontier: tuple[str, ...] = ()
    versions_seen: dict[str, tuple[int, int]] = attrs.field(factory=dict)
    join_progress: JoinProgress = attrs.field(factory=dict)
