"""Helpers for testing your own graphs: collect a run's events, a fake clock, a
scripted language model, and replay comparison (did a resumed run end like an
uninterrupted one?).
"""

from __future__ import annotations

import typing

import attrs

from ._core.errors import ReplayMismatchError as ReplayMismatchError
from ._runtime.replay import ReplayComparison as ReplayComparison
from ._runtime.replay import ReplayRun as ReplayRun
from ._runtime.replay import compare_event_sequences as compare_event_sequences
from ._runtime.replay import compare_final_state as compare_final_state
from ._runtime.replay import compare_replay_runs as compare_replay_runs
from ._runtime.replay import normalize_event as normalize_event
from ._runtime.replay import normalize_state as normalize_state

if typing.TYPE_CHECKING:
    from collections.abc import Iterable

    from ._core.state import VersionedState
    from ._runtime.app import App
    from ._runtime.config import RuntimeConfig
    from ._runtime.context import NodeContext
    from .events.types import Event

__all__ = (
    "FakeClock",
    "FakeLLM",
    "ReplayComparison",
    "ReplayMismatchError",
    "ReplayRun",
    "collect_events",
    "compare_event_sequences",
    "compare_final_state",
    "compare_replay_runs",
    "normalize_event",
    "normalize_state",
)


async def collect_events(
    app: App, state: VersionedState, *, config: RuntimeConfig | None = None
) -> tuple[VersionedState, list[Event]]:
    """Run ``app`` to completion; return its final state and every event.

    The list ends with the stream-end sentinel. A checkpoint.

    Raises:
        WorkflowError: a node failed (use `App.invoke_streaming` to see the
            events of a failing run).
    """
    final, channel = await app.invoke_with_channel(state, config=config)
    with channel:
        events = [event async for event in channel]
    return final, events


@attrs.define
class FakeClock:
    """A deterministic clock for `RuntimeConfig(clock=...)`.

    Each call returns the current time and then moves it on by ``tick``
    seconds, so event timestamps are distinct, ordered and reproducible.

    Attributes:
        now: The next value returned (POSIX seconds).
        tick: How far each call moves the clock.
    """

    now: float = 1_700_000_000.0
    tick: float = 0.001

    def __call__(self) -> float:
        value = self.now
        self.now += self.tick
        return value

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        self.now += seconds


def _to_answers(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


@attrs.define
class FakeLLM:
    """A scripted language model: answers in order, streamed in chunks.

    ``await llm.complete(ctx, prompt)`` emits the next scripted answer as
    `LLMEvent` chunks of ``chunk_size`` characters and a final event carrying
    the whole text, and returns the text. Prompts are recorded in `prompts`.

    Attributes:
        answers: The answers, used in order.
        chunk_size: Characters per streamed chunk.
        prompts: Every prompt received, in order.
    """

    answers: tuple[str, ...] = attrs.field(converter=_to_answers)
    chunk_size: int = 8
    prompts: list[str] = attrs.field(factory=list)

    @classmethod
    def of(cls, *answers: str) -> FakeLLM:
        """A fake answering ``answers`` in order."""
        return cls(answers)

    async def complete(
        self, ctx: NodeContext, prompt: str, *, stream_id: str = "llm"
    ) -> str:
        """Stream the next answer to ``ctx``'s run and return it.

        Raises:
            IndexError: every scripted answer was already used.
        """
        if len(self.prompts) >= len(self.answers):
            raise IndexError(
                f"FakeLLM has {len(self.answers)} scripted answers and all were used;"
                " script more with FakeLLM.of(...)"
            )
        text = self.answers[len(self.prompts)]
        self.prompts.append(prompt)
        for piece in _chunks(text, self.chunk_size):
            ctx.emit_llm_chunk(stream_id, piece)
        ctx.emit_llm_final(stream_id)
        return text


def _chunks(text: str, size: int) -> Iterable[str]:
    for start in range(0, len(text), max(1, size)):
        yield text[start : start + size]
