"""One node activation's memory: answers to its interrupts, results of its tasks.

A node that interrupts (``await ctx.interrupt(payload)``) ends its task; when
the session resumes, the node runs again from its start. Its `Activation`
replays what is recorded: each answered interrupt returns its answer at once,
and each recorded durable task (``await ctx.task(name, fn, ...)``) returns its
stored result without running again. The records live in the `Session` (and so
in its stored pending record) until the step commits.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from .._core.errors import StateError
from .._core.session import Interrupt, Session, task_key
from .._core.values import require_storable


class InterruptSignal(BaseException):
    """Internal: unwinds a node that asked for an interrupt.

    A `BaseException`, so node code's ``except Exception`` cannot swallow it
    and retry policies never see it.
    """

    def __init__(self, interrupt: Interrupt) -> None:
        super().__init__(interrupt.id)
        self.interrupt = interrupt


Persist = Callable[[Session], Awaitable[None]]


class Activation:
    """What one node's run in one step has recorded (shared by its attempts)."""

    __slots__ = (
        "_asked",
        "_calls",
        "index",
        "key",
        "node",
        "persist",
        "session",
        "step",
    )

    def __init__(
        self,
        session: Session,
        node: str,
        step: int,
        persist: Persist | None,
        task: int | None = None,
    ) -> None:
        self.session = session
        self.node = node
        self.index = task
        self.key = task_key(node, task)
        self.step = step
        self.persist = persist
        self._asked = 0
        self._calls: dict[str, int] = {}

    async def interrupt(self, payload: Any) -> Any:
        index = self._asked
        self._asked += 1
        answers = self.session.answers.get(self.key, ())
        if index < len(answers):
            await trio.lowlevel.checkpoint()
            return answers[index]
        require_storable(payload, f"the payload of {self.key!r}'s interrupt")
        raise InterruptSignal(
            Interrupt(
                id=f"{self.key}@{self.step}#{index}",
                node=self.node,
                payload=payload,
                task=self.index,
            )
        )

    async def task(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        if not isinstance(name, str) or not name:
            raise StateError(f"a task name is a non-empty string, got {name!r}")
        count = self._calls.get(name, 0)
        self._calls[name] = count + 1
        key = f"{name}#{count}"
        recorded = self.session.tasks.setdefault(self.key, {})
        if key in recorded:
            await trio.lowlevel.checkpoint()
            return recorded[key]
        result = fn(*args)
        if inspect.isawaitable(result):
            result = await result
        require_storable(result, f"the result of task {name!r} of {self.node!r}")
        recorded[key] = result
        if self.persist is not None:
            await self.persist(self.session)
        return result
