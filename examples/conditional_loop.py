"""A router loop: ``count`` runs until the counter reaches a target.

``add_conditional_edge`` attaches a router to ``count``; after every run of the
node the router reads the new state and sends the run back to ``count`` or on to
``END``. ``path_map`` declares where the router may go, so ``compile`` can check
that every node is reachable and can reach ``END``.
"""

from __future__ import annotations

import trio

from weavegraph import (
    END,
    START,
    GraphBuilder,
    NodeContext,
    NodePartial,
    StateSnapshot,
    VersionedState,
)

TARGET = 5


async def count(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    """Add one to ``extra["count"]``."""
    value = snapshot.extra.get("count", 0) + 1
    ctx.emit("count", f"count is now {value}")
    return NodePartial(extra={"count": value})


def keep_going(snapshot: StateSnapshot) -> str:
    """Back to ``count`` until the target, then finish."""
    return "count" if snapshot.extra["count"] < TARGET else END


app = (
    GraphBuilder()
    .add_node("count", count)
    .add_edge(START, "count")
    .add_conditional_edge("count", keep_going, path_map=["count", END])
    .compile()
)


async def main() -> VersionedState:
    """Run the loop, printing each step's event as it arrives."""
    async with app.invoke_streaming(VersionedState()) as (invocation, events):
        async for event in events:
            print(event)
        final = await invocation.join()
    print(f"final count: {final.extra['count']} (extra version {final.versions.extra})")
    return final


if __name__ == "__main__":
    trio.run(main)
