"""Stream a workflow to web clients over Server-Sent Events, on trio.

Run it with one command, then open http://127.0.0.1:8000/ (the live viewer) or
stream a run from a shell::

    python examples/sse_server.py
    python -m weavegraph serve examples.sse_server:app     # the same, from the CLI
    curl -N http://127.0.0.1:8000/runs -H 'Content-Type: application/json' \
         -d '{"messages": ["hi"]}'

Each POST (a JSON body, said so by its Content-Type) starts a run and streams
its events (``id:``/``event:``/``data:`` frames) until the stream-end event;
closing the connection cancels the run. ``GET /runs/<session>/events``
re-attaches to a run, resuming after ``Last-Event-ID``. Ctrl-C or SIGTERM ends
every open stream with its ``status=cancelled`` sentinel, then stops.
"""

from __future__ import annotations

import sys

import trio

from weavegraph import (
    END,
    START,
    GraphBuilder,
    Message,
    NodeContext,
    NodePartial,
    StateSnapshot,
)
from weavegraph.serve import serve_until_interrupted


async def research(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    """Pretend to look things up, reporting progress as it goes."""
    question = snapshot.messages[-1].content if snapshot.messages else "nothing"
    for source in ("encyclopedia", "news", "forum"):
        await trio.sleep(0.2)
        ctx.emit("research", f"searched the {source} for {question!r}", source=source)
    return NodePartial(extra={"sources": 3})


async def answer(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    """Stream an answer token by token, like a chat model."""
    words = f"I found {snapshot.extra['sources']} sources; here is a summary.".split()
    for word in words:
        await trio.sleep(0.05)
        ctx.emit_llm_chunk("answer", word + " ")
    ctx.emit_llm_final("answer", " ".join(words))
    return NodePartial(messages=[Message.assistant(" ".join(words))])


app = (
    GraphBuilder()
    .add_node("research", research)
    .add_node("answer", answer)
    .add_edge(START, "research")
    .add_edge("research", "answer")
    .add_edge("answer", END)
    .compile()
)


async def main(port: int) -> None:
    """Serve until Ctrl-C (or SIGTERM); then stop gracefully."""
    await serve_until_interrupted(
        app, port=port, announce=lambda urls: print(f"serving on {urls[0]}", flush=True)
    )
    print("stopped")


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 8000)
