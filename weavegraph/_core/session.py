"""The scheduling memory of one session: state, step, frontier, gating, joins."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

from .errors import ErrorEvent, InvalidSessionIdError
from .frontier import JoinProgress
from .state import NodePartial, Send, VersionedState

SESSION_ID_RULE = (
    "1 to 128 characters of letters, digits and '._:@-', starting with a letter"
    " or a digit"
)
"""The one rule every entry point applies to session ids (human-readable)."""

_SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")


def check_session_id(value: object) -> str:
    """Return ``value`` if it is a valid session id, else raise.

    Ids travel in URLs, CLI arguments, log lines and SQL rows, so one rule keeps
    them safe everywhere: see `SESSION_ID_RULE`.

    Raises:
        InvalidSessionIdError: ``value`` is not a string or breaks the rule.
    """
    if isinstance(value, str) and _SESSION_ID.fullmatch(value):
        return value
    raise InvalidSessionIdError(
        f"invalid session id {value!r}: a session id is {SESSION_ID_RULE}"
    )


@attrs.frozen(kw_only=True)
class Interrupt:
    """A pause a node asked for with ``await ctx.interrupt(payload)``.

    Attributes:
        id: Stable across re-runs of the node: ``node@step#n`` for its n-th
            interrupt (from 0) in that step (``node[i]@step#n`` for the sent
            task ``i``).
        node: The node that asked.
        payload: What it asked with (a storable value).
        task: The index of the `Send` task that asked, or ``None``.
    """

    id: str
    node: str
    payload: Any = None
    task: int | None = None

    @property
    def key(self) -> str:
        """The asking task's key (see `task_key`)."""
        return task_key(self.node, self.task)


def task_key(node: str, task: int | None) -> str:
    """How a step's task is keyed in pending writes, answers and task results.

    The node's name for an ordinarily scheduled node; ``node[i]`` for the
    ``i``-th `Send` task of the step (node names may not contain ``[``).
    """
    return node if task is None else f"{node}[{task}]"


@attrs.frozen(init=False)
class Resume:
    """The input that resumes a paused session: ``app.invoke(Resume("yes"), ...)``.

    ``Resume(value)`` answers the one pending interrupt; ``Resume(values={id:
    value, ...})`` answers several by id. ``Resume()`` continues a session
    paused at a breakpoint.
    """

    value: Any
    values: Mapping[str, Any] | None

    def __init__(self, value: Any = None, *, values: Mapping[str, Any] | None = None):
        object.__setattr__(self, "value", value)
        object.__setattr__(self, "values", None if values is None else dict(values))


@attrs.define(kw_only=True)
class Session:
    """Everything needed to continue a run from between two supersteps.

    Attributes:
        session_id: The session's id.
        state: The current state.
        step: The last superstep that ran (0 before the first).
        frontier: The nodes of the next superstep, in order.
        sends: The `Send` tasks of the next superstep, in send order.
        versions_seen: Per node, the (messages, extra) versions it last ran at.
        join_progress: Per join, the sources that ran since its target last ran.
        budget_start: The step the current invocation (a turn or a resume)
            started from; ``max_steps`` counts supersteps from here. Not stored.
        pending: Partials of the nodes of step ``pending_step`` that already
            finished while that step has not committed (it failed or was
            cancelled); resuming runs only the others. Keyed by `task_key`.
        pending_step: The step ``pending`` belongs to (``None``: nothing pending).
        error: The failure of the last attempt at the next step, if it failed.
        gated_out: When the last step ran nothing because version gating
            skipped every node of its frontier, those nodes (else empty).
        interrupts: The interrupts the next step is paused on.
        answers: Per node of the next step, the answers its interrupts got so
            far, in order (the node re-runs from its start; answered interrupts
            return their answer at once).
        tasks: Per node of the next step, the recorded results of its durable
            tasks (``ctx.task``), by ``name#n``.
        breakpoint_hit: The step a breakpoint paused before; the next run
            passes it once.
    """

    session_id: str
    state: VersionedState
    step: int = 0
    frontier: tuple[str, ...] = ()
    sends: tuple[Send, ...] = ()
    versions_seen: dict[str, tuple[int, int]] = attrs.field(factory=dict)
    join_progress: JoinProgress = attrs.field(factory=dict)
    budget_start: int = 0
    pending: dict[str, NodePartial | None] = attrs.field(factory=dict)
    pending_step: int | None = None
    error: ErrorEvent | None = None
    gated_out: tuple[str, ...] = ()
    interrupts: tuple[Interrupt, ...] = ()
    answers: dict[str, list[Any]] = attrs.field(factory=dict)
    tasks: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    breakpoint_hit: int | None = None
