"""weavegraph from asyncio hosts (Jupyter), and asyncio libraries from trio nodes.

Part 1 is what a notebook cell does: the kernel's asyncio loop is running, and
`weavegraph.notebook` runs the workflow in one long-lived trio guest run on that
loop. Cancelling the asyncio task cancels the workflow.

Part 2 is the other direction: a trio program whose node must call an
asyncio-only library. trio-asyncio (the ``notebook`` extra) runs an asyncio loop
inside trio, and ``aio_as_trio`` awaits asyncio code from the node.
"""

from __future__ import annotations

import asyncio

import trio

from weavegraph import (
    END,
    START,
    GraphBuilder,
    Message,
    NodeContext,
    NodePartial,
    StateSnapshot,
    VersionedState,
    notebook,
)


async def think(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    """Stream a short answer."""
    for word in ["trio", "runs", "inside"]:
        await trio.sleep(0.005)
        ctx.emit_llm_chunk("answer", word + " ")
    ctx.emit_llm_final("answer", "asyncio")  # the last piece, not the whole text
    return NodePartial(messages=[Message.assistant("trio runs inside asyncio")])


thinker = (
    GraphBuilder()
    .add_node("think", think)
    .add_edge(START, "think")
    .add_edge("think", END)
    .compile()
)


async def notebook_cell() -> None:
    """Part 1: what an ``await``-ing notebook cell would run."""
    print("part 1: asyncio host, trio guest run")
    async for event in notebook.stream(thinker, VersionedState.with_user_message("?")):
        print(f"  {event.scope_label:>26}  {event.message!r}")
    final = await notebook.invoke(thinker, VersionedState.with_user_message("again"))
    print(f"  invoke -> {final.messages[-1].content!r}")
    slow = asyncio.create_task(
        notebook.invoke(thinker, VersionedState.with_user_message("stop me"))
    )
    await asyncio.sleep(0.006)
    slow.cancel()  # like interrupting the cell
    try:
        await slow
    except asyncio.CancelledError:
        print("  cancelled from asyncio: the trio run was cancelled too")
    await notebook.stop()


async def legacy_lookup(city: str) -> str:
    """An asyncio-only client library (it uses asyncio APIs directly)."""
    await asyncio.sleep(0.01)
    return f"{city}: 21°C"


async def weather(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    """A trio node awaiting the asyncio library through trio-asyncio."""
    import trio_asyncio

    report = await trio_asyncio.aio_as_trio(legacy_lookup)("Lisbon")
    ctx.emit("weather", report)
    return NodePartial(extra={"weather": report})


async def trio_program() -> None:
    """Part 2: a trio program with an asyncio loop available to its nodes."""
    # Imported here: trio-asyncio installs its own asyncio loop policy, which
    # part 1 (a plain asyncio host) must not see.
    import trio_asyncio

    print("part 2: trio program, asyncio library in a node")
    app = (
        GraphBuilder()
        .add_node("weather", weather)
        .add_edge(START, "weather")
        .add_edge("weather", END)
        .compile()
    )
    async with trio_asyncio.open_loop():
        final = await app.invoke(VersionedState())
    print(f"  extra -> {dict(final.extra)}")


if __name__ == "__main__":
    asyncio.run(notebook_cell())
    trio.run(trio_program)
