"""Subgraphs: a research graph reused as one node of a writer graph.

The child (``search → summarise``) runs inside the parent's ``research`` node;
its events reach the parent's stream with their path. The first run fails
inside the child, after its search was stored; resuming the parent resumes
inside the child, so the search does not run again.

Run: ``python examples/subgraphs.py``
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import trio

from weavegraph import (
    END,
    START,
    GraphBuilder,
    Message,
    NodeContext,
    NodePartial,
    RuntimeConfig,
    SQLiteCheckpointer,
    StateSnapshot,
    VersionedState,
    WorkflowError,
)

calls: Counter[str] = Counter()
outage = ["the model is overloaded"]  # the first summary attempt fails


async def search(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    calls["search"] += 1
    ctx.emit("progress", "searching the web")
    return NodePartial(extra={"hits": ["trio.readthedocs.io", "attrs.org"]})


async def summarise(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    calls["summarise"] += 1
    if outage:
        raise ConnectionError(outage.pop())
    ctx.emit("progress", "summarising")
    text = " and ".join(snapshot.extra["hits"])
    return NodePartial(messages=[Message.assistant(f"Read {text}.")])


async def write(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    calls["write"] += 1
    return NodePartial(extra={"article": f"ARTICLE: {snapshot.messages[-1].content}"})


research = (
    GraphBuilder()
    .add_node("search", search)
    .add_node("summarise", summarise)
    .add_edge(START, "search")
    .add_edge("search", "summarise")
    .add_edge("summarise", END)
    .compile()
)


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with SQLiteCheckpointer(Path(tmp) / "runs.db") as store:
            writer = (
                GraphBuilder()
                .add_node("research", research)
                .add_node("write", write)
                .add_edge(START, "research")
                .add_edge("research", "write")
                .add_edge("write", END)
                .compile(RuntimeConfig(checkpointer=store))
            )
            print(writer.graph.to_mermaid(), end="")
            try:
                await writer.invoke(
                    VersionedState.with_user_message("trio"), session_id="a1"
                )
            except WorkflowError as err:
                print(f"first run failed: {err.error_event.error.message}")
            async with writer.invoke_streaming(None, session_id="a1") as (run, events):
                async for event in events:
                    if event.scope_label == "progress":
                        path = "/".join(event.metadata["path"])
                        print(f"{path}: {event.message}")
                final = await run.join()
            stored = sorted(s.session_id for s in await store.list_sessions())
    print(final.extra["article"])
    print("sessions stored:", ", ".join(stored))
    print("calls:", ", ".join(f"{name}={n}" for name, n in sorted(calls.items())))


if __name__ == "__main__":
    trio.run(main)
