"""Fan-out and join: three workers run concurrently, ``merge`` waits for all.

``add_edge(["a", "b", "c"], "merge")`` is a join: ``merge`` is scheduled once,
after every one of its sources ran. The workers sleep for different times, yet
the barrier merges their updates in frontier order, so the result is the same
whichever finishes first.
"""

from __future__ import annotations

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
)

DELAYS = {"a": 0.03, "b": 0.01, "c": 0.02}


async def split(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    """Hand out the work."""
    return NodePartial(extra={"job": snapshot.messages[-1].content})


def worker(name: str):
    """A worker that takes ``DELAYS[name]`` seconds."""

    async def work(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        await trio.sleep(DELAYS[name])
        ctx.emit("done", f"{name} finished after {DELAYS[name]}s")
        return NodePartial(
            messages=[Message.assistant(f"{name}: {snapshot.extra['job']}")]
        )

    return work


async def merge(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    """Runs once, after a, b and c."""
    parts = [m.content for m in snapshot.messages if m.role == "assistant"]
    return NodePartial(extra={"summary": " | ".join(parts)})


builder = GraphBuilder().add_node("split", split).add_node("merge", merge)
builder.add_edge(START, "split")
for name in DELAYS:
    builder.add_node(name, worker(name))
    builder.add_edge("split", name)
builder.add_edge(list(DELAYS), "merge")
builder.add_edge("merge", END)
app = builder.compile()


async def main() -> VersionedState:
    """Run it and show that the merge order follows the frontier, not timing."""
    start = trio.current_time()
    final = await app.invoke(VersionedState.with_user_message("count the stars"))
    elapsed = trio.current_time() - start
    print(final.extra["summary"])
    print(f"took {elapsed:.3f}s: the workers overlapped (sum of delays is 0.06s)")
    return final


if __name__ == "__main__":
    trio.run(main)
