"""weavegraph.notebook: a trio guest run serving an asyncio host."""

from __future__ import annotations

import asyncio

import pytest
import trio

from weavegraph import (
    END,
    START,
    GraphBuilder,
    NodeContext,
    NodePartial,
    RunCancelledError,
    StateSnapshot,
    VersionedState,
    WorkflowError,
    notebook,
)


def ticking(count: int, delay: float, seen: list[str] | None = None):
    async def tick(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        try:
            for i in range(count):
                ctx.emit("tick", str(i))
                await trio.sleep(delay)
        except trio.Cancelled:
            if seen is not None:
                seen.append("cancelled")
            raise
        return NodePartial(extra={"ticks": count})

    return (
        GraphBuilder()
        .add_node("tick", tick)
        .add_edge(START, "tick")
        .add_edge("tick", END)
        .compile()
    )


def host(coro_fn):
    async def cell() -> object:
        try:
            return await coro_fn()
        finally:
            await notebook.stop()

    return asyncio.run(cell())


def test_invoke_and_stream_from_asyncio() -> None:
    async def cell() -> tuple[object, list[str]]:
        final = await notebook.invoke(ticking(3, 0.001), VersionedState())
        seen = [
            (e.scope_label, e.message)
            async for e in notebook.stream(ticking(3, 0.001), VersionedState())
        ]
        return final, seen

    final, seen = host(cell)
    assert final.extra == {"ticks": 3}  # type: ignore[attr-defined]
    assert [scope for scope, _ in seen[:-1]] == [
        "node.start",
        "tick",
        "tick",
        "tick",
        "node.end",
        "step.end",
    ]
    assert [message for _, message in seen[1:4]] == ["0", "1", "2"]
    assert "status=completed" in seen[-1][1]


def test_many_concurrent_runs_share_one_guest_run() -> None:
    async def cell() -> list[object]:
        apps = [ticking(5, 0.001) for _ in range(8)]
        return await asyncio.gather(
            *(notebook.invoke(app, VersionedState()) for app in apps)
        )

    assert len(host(cell)) == 8


def test_cancelling_the_asyncio_task_cancels_the_trio_run() -> None:
    seen: list[str] = []

    async def cell() -> None:
        task = asyncio.create_task(
            notebook.invoke(ticking(1000, 0.01, seen), VersionedState())
        )
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(100):  # the trio side unwinds on the next ticks
            if seen:
                break
            await asyncio.sleep(0.01)

    host(cell)
    assert seen == ["cancelled"]


def test_leaving_a_stream_early_cancels_the_run() -> None:
    seen: list[str] = []

    async def cell() -> None:
        async for event in notebook.stream(ticking(1000, 0.01, seen), VersionedState()):
            if event.scope_label == "tick":  # after the runtime's node.start
                assert event.message == "0"
                break
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.01)

    host(cell)
    assert seen == ["cancelled"]


def test_trio_side_cancellation_ends_the_asyncio_side() -> None:
    async def cell() -> None:
        current = await notebook.portal()
        stream = current.stream(ticking(1000, 0.01), VersionedState())
        first = await stream.__anext__()
        assert first.scope_label == "node.start"
        tick = await stream.__anext__()
        assert tick.message == "0"
        await current.stop()  # the trio side goes away
        with pytest.raises(RunCancelledError):
            async for _ in stream:
                pass

    asyncio.run(cell())


def test_failures_reach_asyncio() -> None:
    async def bad(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        raise ValueError("nope")

    app = (
        GraphBuilder().add_node("bad", bad).add_edge(START, "bad").add_edge("bad", END)
    )

    async def cell() -> None:
        with pytest.raises(WorkflowError, match="ValueError: nope"):
            await notebook.invoke(app.compile(), VersionedState())
        events = []
        with pytest.raises(WorkflowError):
            async for event in notebook.stream(app.compile(), VersionedState()):
                events.append(event)  # noqa: PERF401 - keep the events before the error
        assert events[-1].is_stream_end

    host(cell)


def test_awaiting_a_trio_entry_point_from_asyncio_points_to_the_notebook() -> None:
    import weavegraph

    async def cell() -> str:
        with pytest.raises(weavegraph.NotInTrioError) as info:
            await ticking(1, 0.001).invoke(VersionedState())
        await asyncio.sleep(0)  # the asyncio loop is still fine afterwards
        return str(info.value)

    message = asyncio.run(cell())
    assert "weavegraph.notebook" in message
    assert issubclass(weavegraph.NotInTrioError, weavegraph.WeavegraphError)
