"""One run lifecycle: every run, cancelled at any instant, ends with exactly one
stream-end event whose metadata tells how it ended; a run whose sentinel said
completed is completed."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio
from helpers import STORES, chain_app, hi, open_store

from weavegraph import (
    END,
    START,
    STREAM_END_SCOPE,
    Checkpointer,
    GraphBuilder,
    Message,
    NodeContext,
    NodePartial,
    RuntimeConfig,
    StateSnapshot,
)


async def slow(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    await trio.sleep(0.0005)
    return NodePartial(messages=[Message.assistant(f"s{ctx.step}")])


def slow_app(store: Checkpointer | None) -> object:
    builder = GraphBuilder()
    previous = START
    for name in ("a", "b", "c"):
        builder.add_node(name, slow)
        builder.add_edge(previous, name)
        previous = name
    builder.add_edge(previous, END)
    return builder.compile(RuntimeConfig(checkpointer=store))


@pytest.mark.parametrize("kind", ["none", *STORES])
async def test_cancelled_at_any_instant_ends_with_one_sentinel(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    rng = random.Random(8)
    statuses: dict[str, int] = {}
    async with open_store(kind, tmp_path, request) as store:
        app = slow_app(store)
        for trial in range(150):
            # Mostly the first milliseconds (loading, the first step), some later.
            delay = rng.choice(
                [0.0, 0.0, rng.uniform(0, 0.0005), rng.uniform(0, 0.003)]
            )
            config = RuntimeConfig(checkpointer=store, session_id=f"s{trial % 7}")
            ends: list[object] = []
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    run, events = await app.start_streaming(
                        nursery, hi(), config=config
                    )
                    if delay:
                        await trio.sleep(delay)
                    run.cancel("test")
                    ends += [
                        event
                        async for event in events
                        if event.scope_label == STREAM_END_SCOPE
                    ]
            assert run.done
            assert len(ends) == 1, f"trial {trial}: {len(ends)} sentinels"
            status = ends[0].metadata["status"]  # type: ignore[attr-defined]
            assert status in ("completed", "cancelled"), status
            statuses[status] = statuses.get(status, 0) + 1
    assert statuses.get("cancelled", 0) > 0


@pytest.mark.parametrize("kind", ["none", "sqlite"])
async def test_leaving_the_block_after_a_completed_sentinel_keeps_the_run_completed(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    async with open_store(kind, tmp_path, request) as store:
        app = chain_app(["a", "b"], RuntimeConfig(checkpointer=store))
        for _ in range(60):
            async with app.invoke_streaming(hi()) as (run, events):
                async for event in events:
                    if event.is_stream_end:
                        assert event.metadata["status"] == "completed"
                        break
            final = await run.join()
            assert [m.content for m in final.messages] == ["hi", "a", "b"]
