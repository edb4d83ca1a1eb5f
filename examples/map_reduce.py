"""Map-reduce over a list known only at run time, with `Send`.

A planner lists documents; a router sends each one to ``summarise`` as a task
of its own (the same node runs once per document, concurrently, each reading
its document as ``ctx.payload``); a reducer joins the summaries. The first run
fails in the middle of the fan-out; resuming from the SQLite store runs only
the summaries that did not finish.

Run: ``python examples/map_reduce.py``
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
    NodeContext,
    NodePartial,
    RuntimeConfig,
    Send,
    SQLiteCheckpointer,
    StateSnapshot,
    VersionedState,
    WorkflowError,
)

DOCUMENTS = {
    "trio.md": "Structured concurrency for Python: nurseries and cancel scopes.",
    "attrs.md": "Classes without boilerplate: fields, validators, converters.",
    "sqlite.md": "An embedded SQL database engine in a single file.",
    "hypercorn.md": "An ASGI server that runs on trio or asyncio.",
}
calls: Counter[str] = Counter()
flaky = {"sqlite.md"}  # fails once


async def plan(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    return NodePartial(extra={"documents": sorted(DOCUMENTS)})


def fan_out(snapshot: StateSnapshot) -> list[Send]:
    return [Send("summarise", name) for name in snapshot.extra["documents"]]


async def summarise(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    name = ctx.payload
    calls[name] += 1
    await trio.sleep(0.01 * len(name))  # shorter names finish first
    if name in flaky:
        flaky.discard(name)
        raise ConnectionError(f"the model dropped {name}")
    ctx.emit("summary", f"{name} summarised")
    first_words = " ".join(DOCUMENTS[name].split()[:3])
    return NodePartial(extra={"summaries": [f"{name}: {first_words}…"]})


async def reduce(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    return NodePartial(extra={"report": "\n".join(snapshot.extra["summaries"])})


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with SQLiteCheckpointer(Path(tmp) / "runs.db") as store:
            app = (
                GraphBuilder()
                .add_node("plan", plan)
                .add_node("summarise", summarise)
                .add_node("reduce", reduce)
                .add_edge(START, "plan")
                .add_conditional_edge("plan", fan_out)
                .add_edge("summarise", "reduce")
                .add_edge("reduce", END)
                .with_key_reducer("summaries", "append")
                .compile(RuntimeConfig(checkpointer=store))
            )
            try:
                await app.invoke(VersionedState(), session_id="docs")
            except WorkflowError as err:
                print(f"first run failed: {err.error_event.error.message}")
            async with app.invoke_streaming(None, session_id="docs") as (run, events):
                async for event in events:
                    if event.scope_label == "summary":
                        print(f"task {event.metadata['task']}: {event.message}")
                final = await run.join()
    print(final.extra["report"])
    print("calls:", ", ".join(f"{name}={n}" for name, n in sorted(calls.items())))


if __name__ == "__main__":
    trio.run(main)
