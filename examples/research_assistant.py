"""A research assistant: plan, research in parallel, join, draft, critique, revise.

The flagship demo (``make demo``). It shows, in one workflow:

* a parallel fan-out: three researchers run concurrently in one superstep;
* a join: ``synthesise`` runs once, after all three researchers finished;
* a router loop: ``critique`` sends the draft back to ``draft`` until it is good;
* live streaming: progress and token-by-token "model" output printed as they
  happen, ending with the stream-end sentinel.

The language model is a scripted stand-in (`ScriptedModel`) so the demo runs
offline and gives the same answer every time; swap in a real client inside the
nodes. Run it with ``python examples/research_assistant.py ["your question"]``;
add ``--db runs.db --session demo`` to checkpoint every step to SQLite. Run it
twice: the stored session is a conversation, so the second question starts a
new turn of it; ``--resume`` (no question) continues a session that was
interrupted instead.
"""

from __future__ import annotations

import argparse

import trio

from weavegraph import (
    END,
    START,
    App,
    DiagnosticEvent,
    Event,
    EventStream,
    GraphBuilder,
    InMemoryCheckpointer,
    LLMEvent,
    Message,
    NodeContext,
    NodeEvent,
    NodePartial,
    SQLiteCheckpointer,
    StateSnapshot,
    VersionedState,
    open_runner,
)

TOPICS = ("history", "technology", "economics")


class ScriptedModel:
    """Stands in for a chat model: streams canned text with a little latency."""

    def __init__(self, delay: float = 0.01) -> None:
        self.delay = delay

    async def stream(self, ctx: NodeContext, stream_id: str, text: str) -> str:
        """Emit ``text`` word by word as LLM chunks; the last word is the final one.

        The chunks, final included, add up to ``text``.
        """
        *words, last = text.split(" ")
        for word in words:
            await trio.sleep(self.delay)
            ctx.emit_llm_chunk(stream_id, word + " ")
        ctx.emit_llm_final(stream_id, last)
        return text


MODEL = ScriptedModel()


def question_of(snapshot: StateSnapshot) -> str:
    """The latest user message: the question of this turn."""
    for message in reversed(snapshot.messages):
        if message.role == "user":
            return message.content
    return "(no question)"


async def plan(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    """Split the question into one research task per topic."""
    question = question_of(snapshot)
    ctx.emit("plan", f"planning research for: {question}")
    tasks = {topic: f"{topic} of {question}" for topic in TOPICS}
    return NodePartial(
        messages=[Message.assistant(f"Plan: look into {', '.join(TOPICS)}.")],
        extra={"tasks": tasks},
    )


def researcher(topic: str):
    """A node that researches one topic (concurrently with the others)."""

    async def research(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        task = snapshot.extra["tasks"][topic]
        ctx.emit("research", f"researching {task}")
        await trio.sleep(0.05)  # pretend to call a search API
        finding = f"{topic.capitalize()} matters for '{question_of(snapshot)}'."
        return NodePartial(extra={f"finding.{topic}": finding})

    return research


async def synthesise(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    """Combine the findings (runs once, after every researcher)."""
    findings = [snapshot.extra[f"finding.{t}"] for t in TOPICS]
    ctx.emit("synthesise", f"combining {len(findings)} findings")
    return NodePartial(extra={"notes": " ".join(findings), "revision": 0})


async def draft(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    """Write (or rewrite) the answer with the model."""
    revision = snapshot.extra["revision"] + 1
    notes = snapshot.extra["notes"]
    polish = " Sources are cited." if revision > 1 else ""
    text = await MODEL.stream(
        ctx, f"draft-{revision}", f"Draft {revision}: {notes}{polish}"
    )
    return NodePartial(
        messages=[Message.assistant(text)],
        extra={"revision": revision, "draft": text},
    )


async def critique(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    """Judge the draft; the router below reads the verdict."""
    good = "Sources are cited" in snapshot.extra["draft"]
    verdict = "approve" if good else "revise"
    ctx.emit("critique", f"revision {snapshot.extra['revision']}: {verdict}")
    return NodePartial(extra={"verdict": verdict})


def after_critique(snapshot: StateSnapshot) -> str:
    """Loop back to ``draft`` until the critic approves."""
    return "draft" if snapshot.extra["verdict"] == "revise" else END


def build() -> App:
    """The research-assistant graph."""
    builder = GraphBuilder().add_node("plan", plan)
    for topic in TOPICS:
        builder.add_node(f"research_{topic}", researcher(topic))
    builder.add_node("synthesise", synthesise)
    builder.add_node("draft", draft)
    builder.add_node("critique", critique)

    builder.add_edge(START, "plan")
    for topic in TOPICS:
        builder.add_edge("plan", f"research_{topic}")
    builder.add_edge([f"research_{t}" for t in TOPICS], "synthesise")  # a join
    builder.add_edge("synthesise", "draft")
    builder.add_edge("draft", "critique")
    builder.add_conditional_edge(
        "critique", after_critique, path_map={"draft": "draft", END: END}
    )
    return builder.compile()


def show(event: Event) -> None:
    """Print one event the way a terminal UI would."""
    if isinstance(event, LLMEvent):
        if event.is_final:
            print()
        else:
            print(event.chunk, end="", flush=True)
    elif isinstance(event, NodeEvent):
        print(f"  [{event.node_id} @ step {event.step}] {event.message}")
    elif isinstance(event, DiagnosticEvent) and event.is_stream_end:
        print(f"-- {event.message}")


async def main(
    question: str | None, db: str | None = None, session: str | None = None
) -> VersionedState:
    """Run the workflow, printing its events live; return the final state.

    With ``db`` every superstep is checkpointed to that SQLite file; running
    again with the same ``session`` asks a new question in the same session
    (a new turn), and ``question=None`` resumes what is stored.
    """
    app = build()
    print("weavegraph research assistant")
    print(f"question: {question or '(resume the stored session)'}\n")
    session_id = session or "research"
    store = SQLiteCheckpointer(db) if db else InMemoryCheckpointer()
    async with store, open_runner(app, checkpointer=store) as runner:
        events = runner.event_stream(stop_at_stream_end=True)
        given = VersionedState.with_user_message(question) if question else None
        init = await runner.create_session(session_id, given)
        if init.new_turn:
            print(f"new turn of session {session_id!r} from step {init.step}")
        elif init.resumed:
            complete = runner.get_session(session_id).frontier == (END,)
            note = " (complete: ask a new question for a new turn)" if complete else ""
            print(f"resumed session {session_id!r} from step {init.step}{note}")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(print_events, events)
            final = await runner.run_until_complete(session_id)
    print(f"\nanswer ({final.extra['revision']} revisions):")
    print(final.messages[-1].content)
    if db:
        print(
            f"\ncheckpoints in {db}: python -m weavegraph runs steps {session_id}"
            f" --db {db}"
        )
    return final


async def print_events(events: EventStream) -> None:
    """Print every event of the run as it arrives."""
    async for event in events:
        show(event)


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question", nargs="*", help="the research question")
    parser.add_argument("--db", help="checkpoint to this SQLite file")
    parser.add_argument(
        "--session", help="session id (a stored one takes the question as a new turn)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the stored session as it is"
    )
    return parser.parse_args()


if __name__ == "__main__":
    options = parse_args()
    question = " ".join(options.question) or "Why do trains run on time in Japan?"
    trio.run(main, None if options.resume else question, options.db, options.session)
