"""Subgraphs: a compiled `App` that runs as one node of a bigger graph.

``GraphBuilder().add_node("research", child_app)`` wraps the child in a
`Subgraph` body. Each activation of the node runs the child as a session of
its own, nested in the parent's: its id is derived from the parent session, the
node (and sent task) and the step (``parent:node@step``), so the same
activation always finds the same child session again.

- **Structured.** The child's runner, its writer and all its nodes run in a
  nursery inside the parent node's task: cancelling the parent (a client gone,
  ``cancel()``, the node's timeout, a failing sibling) cancels the child, and
  nothing of the child outlives the node.
- **Durable.** The child checkpoints into the parent's store (a runner without
  one keeps its children in memory): when the parent step is retried after a
  crash or a failure, the child resumes from its last stored step and its
  finished steps are not run again. A child that had completed gives back its
  stored final state at once.
- **Interrupts.** A child that pauses pauses the whole session: the parent node
  asks the child's question (``ctx.interrupt`` with the child's payload, or
  ``{"interrupts": [{"id", "node", "payload"}, ...]}`` when the child waits on
  several; answer those with a mapping of child interrupt id to value), and the
  answer resumes the child. Each run and resume of the child is a durable task
  of the parent node, so no answer is ever given twice.
- **Sends.** A `Send` to a subgraph node runs one child per task; by default
  the task's payload, when a mapping, is merged into the child's starting
  ``extra`` (``input(snapshot, payload)`` maps it explicitly).
- **Events.** Child events go to the parent's bus with ``metadata["path"]``
  (``["research", "search"]``); the child sends no stream-end of its own.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from .._core.errors import StateError
from .._core.session import Resume, task_key
from .._core.state import NodePartial, StateSnapshot, VersionedState
from .._trio import open_service_nursery

if TYPE_CHECKING:
    from ..checkpoint.record import Checkpointer
    from .app import App
    from .context import NodeContext
    from .runner import AppRunner

InputMap = Callable[..., VersionedState]
"""``input=``: the child's starting state from the parent's snapshot —
``input(snapshot)``, or ``input(snapshot, payload)`` to read a `Send`'s
payload too (``None`` for a node not sent)."""
OutputMap = Callable[[VersionedState, StateSnapshot], NodePartial]
"""``output=``: the node's partial from the child's final state (and the
parent's snapshot the node started from)."""

_SAFE = re.compile(r"[^A-Za-z0-9._-]")
_MAX_ID = 128


def child_session_id(parent: str, node: str, task: int | None, step: int) -> str:
    """The child session of ``node`` (its sent task ``task``) at ``step``.

    ``parent:node@step`` (``parent:node@step.task`` for a sent task) when
    that is a valid session id; otherwise (a node name with other characters,
    or an id too long) a digest keeps it short and unique.
    """
    where = f"{step}" if task is None else f"{step}.{task}"
    plain = f"{parent}:{node}@{where}"
    if len(plain) <= _MAX_ID and not _SAFE.search(node):
        return plain
    digest = hashlib.sha256(plain.encode()).hexdigest()[:20]
    readable = _SAFE.sub("-", node)[:24].strip(".-") or "node"
    return f"{parent[: _MAX_ID - 64]}:{readable}.{digest}@{where}"


def _start_state(snapshot: StateSnapshot, payload: Any) -> VersionedState:
    extra = dict(snapshot.extra)
    if isinstance(payload, Mapping):  # a Send's payload: the task's own input
        extra.update(payload)
    return VersionedState(messages=list(snapshot.messages), extra=extra)


def _takes_payload(fn: Callable[..., Any]) -> bool:
    """Whether an ``input=`` function takes ``(snapshot, payload)``."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [
        p
        for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in positional)


def _changes(start: VersionedState, final: VersionedState) -> NodePartial:
    """The default output: what the child added or changed, as a partial."""
    messages = list(final.messages[len(start.messages) :])
    extra = {
        k: v
        for k, v in final.extra.items()
        if k not in start.extra or start.extra[k] != v
    }
    errors = list(final.errors[len(start.errors) :])
    return NodePartial(
        messages=messages or None, extra=extra or None, errors=errors or None
    )


def _asked(report: Any) -> list[dict[str, Any]]:
    return [
        {"id": i.id, "node": i.node, "payload": i.payload} for i in report.interrupts
    ]


@attrs.frozen(eq=False)
class Subgraph:
    """The body of a node that runs a compiled `App` (see the module docs)."""

    app: App
    input: InputMap | None = None
    output: OutputMap | None = None

    async def __call__(self, snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        """Run (or resume) this activation's child session; return its changes."""
        host = ctx._host
        if host is None:
            raise StateError("a subgraph node runs only inside a weavegraph run")
        key = task_key(ctx.node_id, ctx.task_index)
        sid = child_session_id(ctx.session_id, ctx.node_id, ctx.task_index, ctx.step)
        if self.input is None:
            start = _start_state(snapshot, ctx.payload)
        elif _takes_payload(self.input):
            start = self.input(snapshot, ctx.payload)
        else:
            start = self.input(snapshot)
        if not isinstance(start, VersionedState):
            raise StateError(
                f"the input= of subgraph node {ctx.node_id!r} returned {start!r};"
                " it must return a VersionedState"
            )
        store = host.child_store()
        async with open_service_nursery() as nursery:
            runner = host.child_runner(self.app, store, nursery, (*host.path, key))
            cancelled = True
            try:
                asked = await ctx.task("subgraph", _run, runner, store, sid, start)
                while asked is not None:
                    payload = (
                        asked[0]["payload"]
                        if len(asked) == 1
                        else {"interrupts": asked}
                    )
                    answer = await ctx.interrupt(payload)
                    answers = (
                        {asked[0]["id"]: answer}
                        if len(asked) == 1
                        else _values(answer, asked, ctx.node_id)
                    )
                    asked = await ctx.task(
                        "subgraph.resume", _resume, runner, sid, answers
                    )
                final = (await runner.get_state(sid)).state
                cancelled = False
            finally:
                await runner._close(cancelled)
        if host.keeps_in_memory(store):
            # Without a store of the parent's, a finished child is not kept:
            # the node's partial (pending until its step commits) has it all.
            await store.delete_session(sid)
        if self.output is None:
            return _changes(start, final)
        partial = self.output(final, snapshot)
        if not isinstance(partial, NodePartial):
            raise StateError(
                f"the output= of subgraph node {ctx.node_id!r} returned {partial!r};"
                " it must return a NodePartial"
            )
        return partial


def _values(answer: Any, asked: list[dict[str, Any]], node: str) -> dict[str, Any]:
    if not isinstance(answer, Mapping):
        raise StateError(
            f"subgraph node {node!r} waits on {len(asked)} interrupts of its child:"
            " answer with a mapping of their ids to values"
            f" ({[a['id'] for a in asked]})"
        )
    return dict(answer)


async def _run(
    runner: AppRunner, store: Checkpointer, sid: str, start: VersionedState
) -> list[dict[str, Any]] | None:
    """Start the child (or resume it where it stopped): ``None`` when it
    completed, else what it asks."""
    stored = await store.load_latest(sid)
    result = await runner._complete(
        sid,
        None,
        create=True,
        state=start if stored is None else None,
        interrupt_before=(),
        interrupt_after=(),
    )
    return None if isinstance(result, VersionedState) else _asked(result)


async def _resume(
    runner: AppRunner, sid: str, answers: dict[str, Any]
) -> list[dict[str, Any]] | None:
    """Resume the child with ``answers`` (by child interrupt id); answers to
    interrupts no longer pending (a resume that was cut short already gave
    them) are not given again."""
    waiting = {i.id for i in (await runner.get_state(sid)).interrupts}
    given = {k: v for k, v in answers.items() if k in waiting}
    result = await runner._complete(
        sid,
        None,
        create=True,
        resume=Resume(values=given) if given else None,
        interrupt_before=(),
        interrupt_after=(),
    )
    return None if isinstance(result, VersionedState) else _asked(result)
