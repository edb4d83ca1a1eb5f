"""weavegraph.testing: the helpers users test their own graphs with."""

from __future__ import annotations

import pytest
from helpers import chain_app, hi

from weavegraph import (
    END,
    START,
    GraphBuilder,
    LLMEvent,
    Message,
    NodeContext,
    NodePartial,
    RuntimeConfig,
    StateSnapshot,
    WorkflowError,
)
from weavegraph.testing import FakeClock, FakeLLM, collect_events


async def test_collect_events_returns_the_state_and_every_event() -> None:
    final, events = await collect_events(chain_app(["a", "b"]), hi())
    assert [m.content for m in final.messages] == ["hi", "a", "b"]
    assert events[-1].is_stream_end
    assert events[-1].metadata["status"] == "completed"


async def test_fake_clock_gives_reproducible_ordered_timestamps() -> None:
    async def node(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        ctx.emit("tick", "one")
        ctx.emit("tick", "two")

    app = (
        GraphBuilder()
        .add_node("n", node)
        .add_edge(START, "n")
        .add_edge("n", END)
        .compile(RuntimeConfig(clock=FakeClock(now=100.0, tick=0.5)))
    )
    _, events = await collect_events(app, hi())
    # Every event of the run takes its time from the configured clock.
    stamps = [(e.scope_label, e.timestamp) for e in events if not e.is_sentinel]
    assert stamps == [
        ("node.start", 100.0),
        ("tick", 100.5),
        ("tick", 101.0),
        ("node.end", 101.5),
        ("step.end", 102.0),
    ]
    clock = FakeClock(now=10.0, tick=1.0)
    clock.advance(5)
    assert clock() == 15.0


async def test_fake_llm_streams_its_answers_in_order() -> None:
    llm = FakeLLM.of("Hello there", "Second")

    async def model(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        text = await llm.complete(ctx, snapshot.messages[-1].content)
        return NodePartial(messages=[Message.assistant(text)])

    app = (
        GraphBuilder()
        .add_node("model", model)
        .add_edge(START, "model")
        .add_edge("model", END)
        .compile()
    )
    final, events = await collect_events(app, hi())
    assert final.messages[-1].content == "Hello there"
    chunks = [e for e in events if isinstance(e, LLMEvent)]
    assert "".join(e.chunk for e in chunks) == "Hello there"
    assert chunks[-1].is_final and len(chunks) > 2
    assert llm.prompts == ["hi"]
    await collect_events(app, hi())
    with pytest.raises(WorkflowError, match="scripted answers"):
        await collect_events(app, hi())
