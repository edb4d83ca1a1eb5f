"""The smallest workflow: one node that greets, run with ``App.invoke``."""

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


async def greet(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    """Answer the user's message."""
    ctx.emit("greeting", "saying hi")
    return NodePartial(messages=[Message.assistant("Hello!")])


app = (
    GraphBuilder()
    .add_node("greet", greet)
    .add_edge(START, "greet")
    .add_edge("greet", END)
    .compile()
)


async def main() -> VersionedState:
    """Run the graph once and print the conversation."""
    final = await app.invoke(VersionedState.with_user_message("Hi?"))
    for message in final.messages:
        print(f"{message.role}: {message.content}")
    print(f"messages version: {final.versions.messages}")
    return final


if __name__ == "__main__":
    trio.run(main)
